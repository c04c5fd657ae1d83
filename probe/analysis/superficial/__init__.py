"""Is self-correction superficial? Concept directions, trajectories, the superficial test,
prompt-induced shift alignment and a causal check (``probe superficial``; docs/methods.md)."""
