"""A run's settings as one dataclass, saved verbatim in ``run.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from probe.engine.hooks import COMPONENTS
from probe.engine.models import DEFAULT_MODEL
from probe.errors import ConfigError, UnknownNameError

# generate: greedy text, parsed. letter: log-prob of the option letter after "The answer is (".
# text: mean log-prob per token of each option's text as the continuation.
MODES = ("generate", "letter", "text")
BENCHMARK_NAMES = ("bbq", "winogender")


@dataclass
class RunConfig:
    """Everything that decides a run's numbers (and a few things that do not, see
    :data:`probe.store.run_schema.RESUME_IGNORED`)."""

    model: str = DEFAULT_MODEL
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARK_NAMES))
    conditions: list[str] | None = None  # None: every condition that applies
    categories: list[str] | None = None  # BBQ categories; None: all present
    limit: int | None = None  # items per category (stratified); None: all
    mode: str = "text"
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    data_dir: str = "data"
    max_new_tokens: int = 24
    reasoning_tokens: int = 96  # first-turn budget of cot and review
    cache_acts: bool = False
    act_positions: int = 1  # the last k prompt tokens, aligned from the end
    act_steps: int = 0  # generate mode: also the first n generated tokens
    act_dtype: str = "float16"
    act_rows_per_shard: int = 256  # rows per activation file (memory holds up to two shards)
    # What --cache-acts stores per block: resid (always), attn_out, mlp_out (see
    # probe.engine.hooks.COMPONENTS). Runs from before the option lack the key: resid only.
    cache_components: list[str] = field(default_factory=lambda: ["resid"])
    shard: str | None = None  # "i/N": this process runs the i-th of N item shards
    trust_remote_code: bool = False
    allow_pickle: bool = False  # model weights from pickle files (.bin) as well as safetensors
    device_map: str | None = None  # e.g. "auto": one model over several GPUs (accelerate)
    # "auto": sdpa where the model's attention allows it, else eager; run.json stores the
    # kernel it resolved to. "sdpa": fused kernel where no attention hook needs eager.
    attention: str = "auto"
    # "default": the chat template's own system prompt (if any); "none": no system block;
    # any other text: that text as the system message (see probe.conditions.prompts).
    system_prompt: str = "default"
    conditions_file: str | None = None  # user conditions (.py/.yaml/.json); see condition_files
    # BBQ: score every cyclic order of the options and un-permute
    # (see probe.conditions.counterbalance).
    # None resolves to True in letter mode, False otherwise; run.json stores the resolved value.
    counterbalance: bool | None = None

    def validate(self) -> RunConfig:
        """Check option values; errors name the option."""
        if self.mode not in MODES:
            raise UnknownNameError("mode (--mode)", self.mode, MODES)
        for bench in self.benchmarks:
            if bench not in BENCHMARK_NAMES:
                raise UnknownNameError("benchmark (--benchmark)", bench, BENCHMARK_NAMES)
        checks = [("--limit", self.limit), ("--batch-size", self.batch_size),
                  ("--max-new-tokens", self.max_new_tokens),
                  ("--reasoning-tokens", self.reasoning_tokens),
                  ("--act-positions", self.act_positions),
                  ("--rows-per-shard", self.act_rows_per_shard)]
        for option, value in checks:
            if value is not None and value <= 0:
                raise ConfigError(f"{option} must be a positive integer, got {value}")
        if self.act_steps < 0:
            raise ConfigError(f"--cache-steps must be >= 0, got {self.act_steps}")
        if self.act_steps and (self.mode != "generate" or not self.cache_acts):
            raise ConfigError("--cache-steps needs --mode generate and --cache-acts "
                              "(likelihood modes generate no tokens)")
        if self.act_steps >= self.max_new_tokens:
            # The last generated token is never fed back, so it has no activations.
            raise ConfigError(f"--cache-steps {self.act_steps} must be below --max-new-tokens "
                              f"{self.max_new_tokens}")
        if not self.system_prompt.strip():
            raise ConfigError("--system-prompt must be default, none or a non-empty text")
        self.counterbalance = self.counterbalanced()
        if self.counterbalance and self.mode == "generate":
            raise ConfigError("--counterbalance needs --mode letter or text (generate mode "
                              "would have to sample every order); use --no-counterbalance")
        if self.attention not in ("auto", "eager", "sdpa"):
            raise UnknownNameError("--attention", self.attention, ("auto", "eager", "sdpa"))
        if self.act_dtype not in ("float16", "bfloat16", "float32"):
            raise UnknownNameError("--act-dtype", self.act_dtype,
                                   ("float16", "bfloat16", "float32"))
        self._check_components()
        self.shard_index()
        return self

    def _check_components(self) -> None:
        """``cache_components``: known names, resid among them, put in canonical order."""
        for name in self.cache_components:
            if name not in COMPONENTS:
                raise UnknownNameError("--cache-components", name, COMPONENTS)
        if len(set(self.cache_components)) != len(self.cache_components):
            raise ConfigError(f"--cache-components names a component twice: "
                              f"{','.join(self.cache_components)}")
        if "resid" not in self.cache_components:
            # Every analysis reads the residual stream; the others are stored beside it.
            raise ConfigError("--cache-components must include resid (e.g. resid,attn_out)")
        if self.cache_components != ["resid"] and not self.cache_acts:
            raise ConfigError("--cache-components needs --cache-acts")
        self.cache_components = [c for c in COMPONENTS if c in self.cache_components]

    def counterbalanced(self) -> bool:
        """Whether BBQ options are scored in every cyclic order (default: letter mode)."""
        return self.mode == "letter" if self.counterbalance is None else self.counterbalance

    def shard_index(self) -> tuple[int, int] | None:
        """``(i, n)`` from ``--shard i/N`` (0-based i), or None."""
        if self.shard is None:
            return None
        try:
            i, n = (int(x) for x in self.shard.split("/"))
        except ValueError:
            raise ConfigError(f"--shard {self.shard!r}: expected i/N, e.g. 0/4") from None
        if n <= 0 or not 0 <= i < n:
            raise ConfigError(f"--shard {self.shard!r}: need 0 <= i < N")
        return i, n

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the form stored in run.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config from run.json; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"run config has unknown keys: {sorted(unknown)}")
        return cls(**data)
