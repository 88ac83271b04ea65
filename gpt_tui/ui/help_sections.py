"""Every key of the app, by the pane where it works: what the help screen lists."""

from __future__ import annotations

from .keys import KEY_BINDINGS, KEY_TITLES, MOVE_BINDINGS
from .tabs import TABS
from .widgets.attention_heatmap import AttentionPanel
from .widgets.code_pane import CodePane, SourceView
from .widgets.help import KeyRow, binding_rows
from .widgets.layer_stats import StatsPanel
from .widgets.param_table import ParamTable
from .widgets.tables import RowTable
from .widgets.tensor_viewer import TensorViewer
from .widgets.train import TrainPanel


def help_sections() -> list[tuple[str, list[KeyRow]]]:
    """Every key, by the pane where it works, from the live bindings."""
    tables = binding_rows(RowTable.BINDINGS)  # Home / End in every table
    tab_names = " ".join(tab.label for tab in TABS)
    return [
        (
            "Anywhere",
            binding_rows(KEY_BINDINGS, KEY_TITLES)
            + binding_rows(MOVE_BINDINGS)
            + [
                (f"1–{len(TABS)}", "Tabs", tab_names),
                ("Ctrl+P", "Palette", "every command by name"),
            ],
        ),
        (
            "Module tree",
            [
                ("↑ ↓", "Move", "select a module (b and a act on it)"),
                ("Space Enter", "Expand", "expand or collapse the module"),
                ("Tab", "Next pane", "to the tabs (the tree narrows to a rail)"),
            ],
        ),
        (
            "Prompt",
            [("\\n \\t \\\\", "Escapes", "a newline, a tab, a backslash in the prompt")],
        ),
        ("Stats", binding_rows(StatsPanel.BINDINGS) + tables),
        ("Params", binding_rows(ParamTable.BINDINGS) + tables),
        (
            "Attention",
            [("← → ↑ ↓", "Cursor", "the query row / key column under the cursor")]
            + binding_rows(AttentionPanel.BINDINGS),
        ),
        (
            "Generate",
            [("f Enter", "Force", "append the highlighted candidate as the next token")]
            + [("g G", "Step / run N", "one token / N tokens (N in the pane)")]
            + [("Enter", "Settings", "in T, top-k, top-p, seed: apply from the next step")]
            + tables,
        ),
        ("Train", binding_rows(TrainPanel.BINDINGS) + tables),
        (
            "Code",
            binding_rows(SourceView.BINDINGS)
            + [("Enter", "View", "in Variables: open the tensor in the viewer")]
            + binding_rows(CodePane.BINDINGS)
            + binding_rows(TensorViewer.BINDINGS)
            + [("Enter", "Evaluate", "in the expression box: evaluate, like pdb's p")]
            + [("whatis EXPR", "Whatis", "in the expression box: the type (pp, where too)")]
            + [("v EXPR", "View", "in the expression box: open EXPR's result in the viewer")]
            + [("g COL", "Go to", "in the expression box: scroll the viewer to COL or ROW,COL")]
            + [("display EXPR", "Display", "in the expression box: EXPR at every line pause")]
            + [("undisplay", "Undisplay", "in the expression box: one (EXPR or N) or all")]
            + [("Enter", "Break at", "in break at: toggle a FUNCTION or FILE:LINE breakpoint")]
            + [("tbreak SPEC", "Temporary", "in break at: a breakpoint gone after its first stop")]
            + [("ignore N COUNT", "Ignore", "in break at: breakpoint N passes its next COUNT hits")]
            + [("disable N", "Disable", "in break at: breakpoint N kept but off (enable N)")]
            + [("condition N EXPR", "Condition", "in break at: N stops if EXPR (none: always)")]
            + [("clear N", "Clear", "in break at: remove breakpoint N (numbers as pdb's)")]
            + tables,
        ),
        (
            "Cost",
            [("bf16 … e5m2", "Dtype", "what that format would do to each module (no re-run)")]
            + [("Numerics", "Re-run", "the prompt's pass, and fp32 against the dtype")]
            + [("Enter", "Measure", "in batch / block: memory and FLOPs of a training step")]
            + tables,
        ),
    ]
