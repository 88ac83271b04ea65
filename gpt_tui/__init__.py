"""gpt-tui: a terminal model-inspector and debugger for nanoGPT and nanochat GPT models."""

__version__ = "0.1.0"
