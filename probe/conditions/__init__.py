"""Conditions: the registry of prompt conditions (Item -> prompt), the built-in ones, placebos,
user condition files and counterbalancing.
"""
