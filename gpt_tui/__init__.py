"""gpt-tui: a terminal model-inspector and debugger for nanoGPT and nanochat GPT models.

In your own script: `gpt_tui.watch(model)` catches a training run's first non-finite
value (under torchrun too), `gpt_tui.inspect(model, idx)` opens the debugger on the live
model, and `gpt_tui.listen(model, optimizer=opt)` lets `gpt-tui attach` look into a
running loop.
"""

from typing import Any

__version__ = "0.1.0"

_LIVE = ("watch", "inspect", "NonFiniteError", "NoTerminalError", "Finding")


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import gpt_tui` stays free of torch and textual.
    if name in _LIVE:
        from . import live

        return getattr(live, name)
    if name == "listen":
        from .listener import listen

        return listen
    raise AttributeError(f"module 'gpt_tui' has no attribute {name!r}")
