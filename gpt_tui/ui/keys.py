"""Every key of the app in one place: the bindings, their titles, and which need a model.

The footer shows KEY_BINDINGS in this order, with their short descriptions, as many as
fit; help and the command palette use KEY_TITLES and the tooltips.
"""

from __future__ import annotations

from textual.binding import Binding

from .tabs import TABS


def _key(key: str, action: str, description: str, tooltip: str, show: bool = True) -> Binding:
    return Binding(key, action, description, show=show, tooltip=tooltip, id=action)


# The engine keys, most important first.
KEY_BINDINGS: list[Binding] = [
    _key("r", "run", "Run", "run the whole forward pass on the prompt"),
    _key("s", "step_into", "Into", "stop at the next probe, going into submodules"),
    _key("n", "step_over", "Over", "run to the end of the current module"),
    _key("o", "step_out", "Out", "run until the enclosing module finishes"),
    _key("c", "continue", "Cont", "run to the next breakpoint or watchpoint"),
    _key("b", "toggle_breakpoint", "Break", "toggle a breakpoint on the selected module"),
    _key("w", "toggle_watch", "NaN", "stop at the first module producing NaN/Inf"),
    _key(
        "l",
        "toggle_leaves",
        "Leaves",
        "also probe and stop at every Linear, norm and activation",
        show=False,
    ),
    _key("g", "generate", "Gen", "sample one token"),
    _key("q", "quit", "Quit", "leave gpt-tui (asks first if a pass is paused or running)"),
    _key("question_mark", "help", "Help", "the panes and keys explained"),
    _key("x", "abort", "Abort", "abort the paused or running forward pass"),
    _key(
        "e",
        "focus_text_box",
        "Edit",
        "type in the tab's box: Code's break-at (expression when paused), Diff's B prompt, "
        "Cost's batch",
    ),
    _key("G", "generate_n", "Gen+", "sample N tokens (N in the Generate tab)"),
    _key("a", "ablate", "Ablate", "toggle ablation of the selected MLP / attention head"),
    _key("N", "step_line('next')", "Line", "next line of the model's code, over calls"),
    _key("S", "step_line('into')", "Line in", "next line, into a called model function"),
    _key("U", "step_line('return')", "Line up", "run to the return of the current function"),
    _key("C", "step_line('continue')", "Line cont", "run to the next line breakpoint"),
    _key("T", "step_token", "Token", "step into the next token's forward and its sampling"),
    _key("Y", "copy", "Copy", "copy the module path, table row or value in focus (OSC 52)", False),
    _key(
        "E", "export", "Export", "save the screen as SVG and the table in focus as CSV/JSON", False
    ),
]

# The footer's order: the line keys (and e, in most tabs p again) rank after the focused
# pane's own keys, so that they show where there is room and never push a pane's keys out.
LINE_ACTIONS = ("step_line", "step_token")
AFTER_PANE_KEYS = (*LINE_ACTIONS, "focus_text_box")
FOOTER_RANK = [b.action for b in KEY_BINDINGS if not b.action.startswith(AFTER_PANE_KEYS)]
# In a tab with a text box of its own (Code, Diff) e ranks among the first: there a word
# meant for the box, typed with the focus elsewhere, sets off one-letter keys.
_AFTER_ABORT = FOOTER_RANK.index("abort") + 1
FOOTER_RANK_BOX = [*FOOTER_RANK[:_AFTER_ABORT], "focus_text_box", *FOOTER_RANK[_AFTER_ABORT:]]

KEY_TITLES: dict[str, str] = {
    "run": "Run",
    "step_into": "Step into",
    "step_over": "Step over",
    "step_out": "Step out",
    "continue": "Continue",
    "toggle_breakpoint": "Breakpoint",
    "toggle_watch": "NaN watch",
    "toggle_leaves": "Leaf probes",
    "generate": "Generate 1",
    "quit": "Quit",
    "help": "Help",
    "abort": "Abort",
    "focus_text_box": "Edit text box",
    "generate_n": "Generate N",
    "ablate": "Ablate",
    "step_line('next')": "Next line",
    "step_line('into')": "Line into",
    "step_line('return')": "Line return",
    "step_line('continue')": "Line continue",
    "step_token": "Step into token",
    "copy": "Copy",
    "export": "Export",
}

# Keys that move focus; shown in help, not in the footer.
MOVE_BINDINGS: list[Binding] = [
    _key("slash", "filter_tree", "Filter", "filter the module tree by name", show=False),
    _key("escape", "focus_tree", "Tree", "back to the module tree", show=False),
    _key("p", "focus_prompt", "Prompt", "edit the prompt (\\n for a newline)", show=False),
]

TAB_BINDINGS: list[Binding] = [
    _key(tab.key, f"show_tab('{tab.id}')", tab.title, f"show the {tab.title} tab", show=False)
    for tab in TABS
]

BINDINGS: list[Binding] = [*KEY_BINDINGS, *MOVE_BINDINGS, *TAB_BINDINGS]

# Actions that need an open model; pressed before it is open, they do nothing.
ENGINE_ACTIONS = frozenset(
    {
        "step_over",
        "step_into",
        "step_out",
        "continue",
        "toggle_breakpoint",
        "toggle_watch",
        "toggle_leaves",
        "run",
        "abort",
        "generate",
        "generate_n",
        "ablate",
        "step_line",
        "step_token",
        "filter_tree",
        "focus_prompt",
        "focus_text_box",
    }
)


# Keys that act while the model opens; the others wait for it and run in order after.
NOW_WHILE_LOADING = frozenset({"q"})


def after_escape(key: str) -> str | None:
    """The key pressed just after Esc, when the two arrived as one: the terminal sends ESC
    and the key back to back, and Textual reads the pair as Alt (within ESCDELAY, 100 ms).
    The app binds no Alt keys, so `alt+2` is Esc then 2 and `alt+shift+g` Esc then G."""
    if not key.startswith("alt+"):
        return None
    char = key.removeprefix("alt+")
    if char.startswith("shift+") and len(char) == 7:
        char = char[-1].upper()
    return char if len(char) == 1 and char.isalnum() else None


# The ids a config file's [keys] table may rebind.
ACTION_IDS = frozenset(b.id for b in BINDINGS if b.id)
DEFAULT_KEYS = {b.id: b.key for b in BINDINGS if b.id}  # what a rebound key must not take
