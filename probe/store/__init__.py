"""Store: the run folder (run.json, rows, locks, provenance, merge) and views of what it holds.
"""
