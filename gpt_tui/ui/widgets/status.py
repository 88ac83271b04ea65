"""The two status lines at the top: which model, where, how big, and what the stepper does."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ... import formatting as fmt
from ...engine.debug_state import ModelInfo


def memory_text(memory: dict[str, int] | None) -> str:
    if not memory:
        return ""
    if "cuda_allocated" in memory:
        return (
            f"CUDA {fmt.nbytes(memory['cuda_allocated'])} "
            f"(peak {fmt.nbytes(memory.get('cuda_peak', 0))})"
        )
    return f"RSS {fmt.nbytes(memory.get('rss', 0))}"


class StatusBar(Widget):
    """Model identity on the first line; stepper state, prompt and watchpoints on the second."""

    info: reactive[ModelInfo | None] = reactive(None)
    memory: reactive[dict[str, int] | None] = reactive(None)
    stepper: reactive[str] = reactive("idle")
    detail: reactive[str] = reactive("")
    loading_text: reactive[str] = reactive("loading model…")

    def render(self) -> Text:
        line1 = Text(no_wrap=True, overflow="ellipsis")
        line1.append(" gpt-tui ", style="bold reverse")
        info = self.info
        if info is None:
            line1.append(f"  {self.loading_text}", style="italic")
        else:
            line1.append(f" {info.name}", style="bold")
            line1.append(f" {info.family}", style="cyan")
            line1.append(f" · {info.device} · {info.dtype}")
            line1.append(f" · {fmt.count(info.summary.total_params)} params", style="bold")
            mem = memory_text(self.memory)
            if mem:
                line1.append(f" · {mem}")
            line1.append(f" · {info.source}", style="dim")
        line2 = Text(no_wrap=True, overflow="ellipsis")
        line2.append(" stepper ", style="dim")
        state = self.stepper
        style = "bold green" if state.startswith("idle") else "bold yellow"
        if state.startswith("error") or state.startswith("non-finite"):
            style = "bold red"
        line2.append(state, style=style)
        if self.detail:
            line2.append(f"  {self.detail}", style="dim")
        return Text("\n").join([line1, line2])
