"""What a failed intent's notification is titled: the intent in a user's words, not the
name of the worker that ran it (`line_breakpoint`)."""

from __future__ import annotations

TITLES = {
    "line_breakpoint": "Breakpoint command",
    "breakpoint": "Module breakpoint",
    "display": "Display expression",
    "evaluate": "Expression",
    "tensor_view": "Tensor viewer",
    "stepper": "Step",
    "run": "Forward pass",
    "generating": "Generation",
    "generation": "Generation",
    "training": "Training step",
    "attention": "Attention",
    "compare": "Comparison",
    "measure": "Measurement",
    "measures": "Measurement",
    "ablation": "Intervention",
    "prompt": "Prompt",
    "watch": "NaN watch",
    "leaves": "Leaf probes",
    "abort": "Abort",
    "refresh": "Refresh",
}


def failed_title(worker: str) -> str:
    """`Breakpoint command failed` for the worker `line_breakpoint`; a worker without a
    title here reads as words (`some_view` -> `Some view failed`)."""
    name = TITLES.get(worker) or worker.replace("_", " ").capitalize()
    return f"{name} failed"
