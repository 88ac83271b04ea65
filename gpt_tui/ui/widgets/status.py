"""The two status lines at the top: which model, where, how big, and what the stepper does.

Both lines are fitted to the width here rather than cut by the terminal: the first drops
its least useful parts (the source, then the family) before the memory figure, and the
second keeps compact indicators of what is switched on at its right end, always visible:

    ●2    two breakpoints          ⚑NaN  the NaN/Inf watchpoint is on
    ◆leaf leaf probes are on       ⊘1    one ablation is active
    ⧗     the engine is busy
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ... import formatting as fmt
from ...engine.core.debug_state import DebugState, ModelInfo


def memory_text(memory: dict[str, int] | None) -> str:
    if not memory:
        return ""
    if "cuda_allocated" in memory:
        return (
            f"CUDA {fmt.nbytes(memory['cuda_allocated'])} "
            f"(peak {fmt.nbytes(memory.get('cuda_peak', 0))})"
        )
    return f"RSS {fmt.nbytes(memory.get('rss', 0))}"


KEEP = 9  # a part of this priority is never left out, only cut short


def _fit(parts: list[tuple[str, str, int]], width: int) -> Text:
    """Join (text, style, priority) parts, leaving out the lowest priorities (the last
    one first on ties) until the line fits; what still does not fit ends in an ellipsis."""
    kept = list(parts)
    while sum(len(t) for t, _, _ in kept) > width and any(p < KEEP for _, _, p in kept):
        lowest = min(p for _, _, p in kept)
        drop = max(i for i, (_, _, p) in enumerate(kept) if p == lowest)
        del kept[drop]
    line = Text(no_wrap=True, overflow="ellipsis")
    for text, style, _ in kept:
        line.append(text, style=style)
    line.truncate(width, overflow="ellipsis")
    return line


class StatusBar(Widget):
    """Model identity on the first line; stepper state, prompt and indicators on the second.

    The app sets the fields; the bar decides how they fit.
    """

    info: reactive[ModelInfo | None] = reactive(None)
    memory: reactive[dict[str, int] | None] = reactive(None)
    stepper: reactive[str] = reactive("idle")
    loading_text: reactive[str] = reactive("loading model…")
    prompt: reactive[str] = reactive("")
    breakpoints: reactive[int] = reactive(0)  # how many
    watch: reactive[bool] = reactive(False)  # the NaN/Inf watchpoint
    leaves: reactive[bool] = reactive(False)  # leaf probes
    ablations: reactive[int] = reactive(0)  # how many are active
    busy: reactive[bool] = reactive(False)  # the engine is working

    def show_state(self, state: DebugState, busy: bool) -> None:
        """The compact marks and the prompt from a snapshot."""
        self.prompt = state.prompt  # shown escaped, as in the prompt box: a newline reads \n
        self.breakpoints = len(state.breakpoints)
        self.watch = state.watch_nonfinite
        self.leaves = state.leaves
        self.ablations = len(state.ablations)
        self.busy = busy

    def indicators(self) -> Text:
        """What is switched on, as compact marks (empty when nothing is)."""
        marks = [
            (f"●{self.breakpoints}", "bold red", self.breakpoints > 0),
            ("⚑NaN", "bold yellow", self.watch),
            ("◆leaf", "bold cyan", self.leaves),
            (f"⊘{self.ablations}", "bold magenta", self.ablations > 0),
            ("⧗", "bold", self.busy),
        ]
        text = Text(no_wrap=True)
        for mark, style, on in marks:
            if on:
                text.append(f" {mark}", style=style)
        return text

    def _model_line(self, width: int) -> Text:
        info = self.info
        if info is None:
            loading = [
                (" gpt-tui ", "bold reverse", KEEP),
                (f"  {self.loading_text}", "italic", KEEP),
            ]
            return _fit(loading, width)
        mem = memory_text(self.memory)
        return _fit(
            [
                (" gpt-tui ", "bold reverse", 2),
                (f" {info.name}", "bold", KEEP),
                (f" {info.family}", "cyan", 3),
                (f" · {info.device} · {info.dtype}", "", 6),
                (f" · {fmt.count(info.summary.total_params)} params", "bold", 7),
                (f" · {mem}" if mem else "", "", 5),
                (f" · {info.source}", "dim", 1),
                (f" · {info.tokenizer}" if info.tokenizer else "", "dim", 0),
            ],
            width,
        )

    def _state_line(self, width: int) -> Text:
        marks = self.indicators()
        state = self.stepper
        style = "bold green" if state.startswith("idle") else "bold yellow"
        if state.startswith("error") or state.startswith("non-finite"):
            style = "bold red"
        left = _fit(
            [
                (" stepper ", "dim", 1),
                (state, style, KEEP),
                # as the prompt box writes it: \n, \t, \\, a control character as \xNN
                (f"  prompt '{fmt.escape_prompt(self.prompt)}'" if self.info else "", "dim", KEEP),
            ],
            max(1, width - marks.cell_len - 1),
        )
        left.pad_right(width - marks.cell_len - left.cell_len)
        return left + marks

    def render(self) -> Text:
        width = max(20, self.size.width)
        return Text("\n").join([self._model_line(width), self._state_line(width)])
