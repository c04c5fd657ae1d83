"""Render a condition's turns into the exact text handed to the tokenizer.

Chat models get their own chat template; base models a plain ``Human:``/``Assistant:``
format (as in Ganguli et al. 2023). The text carries its own BOS where the model wants one
and is always tokenized with ``add_special_tokens=False``, so BOS is never doubled.

The system prompt is a visible choice (``probe run --system-prompt``): ``default`` keeps
whatever the chat template inserts by itself (SmolLM2: "You are a helpful AI assistant named
SmolLM, trained by Hugging Face"), ``none`` removes the template's system block entirely,
and any other text becomes the system message.
"""

from __future__ import annotations

from typing import Any

from probe.engine.continuation import continuation, prompt_stem
from probe.errors import ConfigError

SYSTEM_DEFAULT, SYSTEM_NONE = "default", "none"
_SENTINEL = "\x00probe-system\x00"


def render(tokenizer: Any, chat: bool, history: list[tuple[str, str]], user: str,
           assistant_prefix: str = "", system: str = SYSTEM_DEFAULT) -> str:
    """The prompt text for a final user turn after earlier (user, assistant) exchanges."""
    if chat:
        messages: list[dict[str, str]] = []
        for question, answer in history:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return _begin_answer(_chat_text(tokenizer, messages, system), assistant_prefix)
    parts = [f"Human: {q}\n\nAssistant: {a}" for q, a in history]
    parts.append(_begin_answer(f"Human: {user}\n\nAssistant:", assistant_prefix))
    preamble = "" if system in (SYSTEM_DEFAULT, SYSTEM_NONE) else f"{system}\n\n"
    return _bos_text(tokenizer) + preamble + "\n\n".join(parts)


def _template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True))


def _chat_text(tokenizer: Any, messages: list[dict[str, str]], system: str) -> str:
    if system == SYSTEM_DEFAULT:
        return _template(tokenizer, messages)
    try:
        marked = _template(tokenizer, [{"role": "system", "content": _SENTINEL}, *messages])
    except Exception as err:  # templates that refuse a system role (e.g. Gemma) raise
        if system == SYSTEM_NONE:
            return _template(tokenizer, messages)  # they insert no system prompt either
        raise ConfigError(f"--system-prompt: this model's chat template refuses a system "
                          f"message ({err})") from None
    if marked.count(_SENTINEL) != 1:
        raise ConfigError("--system-prompt: this model's chat template drops the system message")
    if system != SYSTEM_NONE:
        return marked.replace(_SENTINEL, system)
    return _without_system_block(marked, messages[0]["content"])


def _without_system_block(marked: str, first_user: str) -> str:
    """``marked`` (rendered with a sentinel system message) minus the whole system block.

    The block is the system header, the message and its footer. The header is found as the
    first user turn's header with "user" replaced by "system" (chat templates write every
    role's header alike); its footer is what precedes the user header after the message.
    """
    before, after = marked.split(_SENTINEL)
    at = after.find(first_user.strip()[:40])  # templates may trim a message's whitespace
    gap = after[:at] if at >= 0 else ""  # system footer + user header
    for cut in range(len(gap)):
        user_header = gap[cut:]
        if "user" not in user_header:
            break
        start = before.rfind(user_header.replace("user", "system"))
        if start >= 0:
            return before[:start] + after[cut:]
    raise ConfigError("--system-prompt none: cannot find the system block in this model's "
                      "chat template; pass an explicit text instead")


def _begin_answer(prompt: str, assistant_prefix: str) -> str:
    """The prompt with the assistant's answer begun, joined as the template joins an answer
    ("Assistant: The", "[/INST] The", "assistant\nThe": see :mod:`probe.engine.continuation`)."""
    if not assistant_prefix:
        return prompt
    return prompt_stem(prompt) + continuation(prompt, assistant_prefix)


def _bos_text(tokenizer: Any) -> str:
    """The BOS token as text if this tokenizer would normally prepend it, else ''."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return ""
    ids = tokenizer("x", add_special_tokens=True).input_ids
    return str(tokenizer.bos_token) if ids and ids[0] == bos_id else ""

