"""core: see gpt_tui/engine/__init__.py for the layout."""
