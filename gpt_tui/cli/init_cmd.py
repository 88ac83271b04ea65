"""`gpt-tui init`: each parameter's std beside the init rule that set it, and train vs eval."""

from __future__ import annotations

import argparse

from . import render
from .common import open_session


def cmd_init(args: argparse.Namespace) -> int:
    from ..engine.analysis.init_rules import model_facts, rule_set

    session = open_session(args, reads_text=False)
    facts = model_facts(session.model, session.family)
    rows, mode = facts.init, facts.mode
    rules = rule_set(session.model, session.family)
    if args.json:
        render.print_json(
            dict(
                name=session.name,
                family=session.family,
                rules=rules,
                parameters=rows,
                mode=mode.mode,
                dropout=[dict(where=w, p=p) for w, p in mode.dropout],
                dropout_on=mode.dropout_on,
                changes=list(mode.changes),
                break_example=facts.break_example,
                break_function=facts.break_function,
            )
        )
        return 0
    table = render.table(f"{session.name}: init ({session.family})")
    narrow = render.narrow()
    table.add_column("parameter")
    table.add_column("std now", justify="right")
    table.add_column("init")
    table.add_column("rule")
    if not narrow:
        table.add_column("shape")
    for row in rows:
        name = row.name.removeprefix("transformer.") if narrow else row.name
        std = "—" if row.std is None else render.fmt_stat(row.std)
        cells = [name, std, row.init, row.rule]
        if not narrow:
            cells.append(render.short_shape(row.shape))
        table.add_row(*cells)
    console = render.console()
    console.print(table)
    console.print(f"rules: {rules}", markup=False)
    console.print(f"mode: {mode.line()}")
    for change in mode.changes:
        console.print(f"  {change}")
    console.print(
        f"break at (Code tab): {facts.break_example} or {facts.break_function}",
        markup=False,
    )
    return 0
