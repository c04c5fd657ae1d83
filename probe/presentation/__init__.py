"""Presentation: plots, the HTML report and comparisons across runs.
"""
