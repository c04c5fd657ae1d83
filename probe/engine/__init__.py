"""Engine: load a model, run batched generation and likelihood passes through the bridge with
hooks, and turn a study's prompts into rows.
"""
