"""Render a condition's turns into the exact text handed to the tokenizer.

Chat models get their own chat template; base models a plain ``Human:``/``Assistant:``
format (as in Ganguli et al. 2023). The text carries its own BOS where the model wants one
and is always tokenized with ``add_special_tokens=False``, so BOS is never doubled.
"""

from __future__ import annotations

from typing import Any


def render(tokenizer: Any, chat: bool, history: list[tuple[str, str]], user: str,
           assistant_prefix: str = "") -> str:
    """The prompt text for a final user turn after earlier (user, assistant) exchanges."""
    if chat:
        messages: list[dict[str, str]] = []
        for question, answer in history:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        return str(text) + assistant_prefix
    parts = [f"Human: {q}\n\nAssistant: {a}" for q, a in history]
    parts.append(f"Human: {user}\n\nAssistant:" + (f" {assistant_prefix}" if assistant_prefix
                                                   else ""))
    return _bos_text(tokenizer) + "\n\n".join(parts)


def _bos_text(tokenizer: Any) -> str:
    """The BOS token as text if this tokenizer would normally prepend it, else ''."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return ""
    ids = tokenizer("x", add_special_tokens=True).input_ids
    return str(tokenizer.bos_token) if ids and ids[0] == bos_id else ""


def continuation_text(option: str, assistant_prefix: str) -> str:
    """How an option continues the prompt: after a sentence prefix it needs a space."""
    if assistant_prefix and not assistant_prefix.endswith((" ", "\n")):
        return " " + option
    return option
