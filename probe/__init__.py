"""probe: mechanistic interpretability of moral self-correction in language models."""

__version__ = "0.1.0"
