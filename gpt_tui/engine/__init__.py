"""The UI-free engine: hooks, statistics, attention patterns, stepping, sampling.

Imports torch and numpy only: never textual, rich or gpt_tui.ui (a test enforces it).
"""
