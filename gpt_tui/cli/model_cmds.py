"""Commands about a model as a whole: configs, summary, doctor, samples."""

from __future__ import annotations

import argparse

from ..formatting import count, nbytes, short_shape
from . import render
from .common import open_session


def cmd_configs(args: argparse.Namespace) -> int:
    from ..models import PRESETS, build_model, make_config

    rows = []
    for preset in PRESETS.values():
        for family in preset.families:
            config = make_config(preset.name, family)
            model = build_model(config, "meta", seed=None)
            rows.append(
                dict(
                    preset=preset.name,
                    family=family,
                    n_layer=config.n_layer,
                    n_head=config.n_head,
                    n_kv_head=config.n_kv_head,
                    n_embd=config.n_embd,
                    context=config.context_len,
                    vocab=config.vocab_size,
                    params=sum(p.numel() for p in model.parameters()),
                    description=preset.description,
                )
            )
    if args.json:
        render.print_json(rows)
        return 0
    narrow = render.narrow()
    # Narrow: short headers, counts as 10.75M, no description (the names say enough).
    headers = (
        dict(n_layer="layer", n_head="head", n_kv_head="kv", n_embd="embd", context="ctx")
        if narrow
        else {}
    )
    table = render.table("Presets (--config NAME, --arch FAMILY where a preset fits both)")
    for col in ("preset", "family"):
        table.add_column(col, no_wrap=True)
    numeric = ("n_layer", "n_head", "n_kv_head", "n_embd", "context", "vocab", "params")
    for col in numeric:
        table.add_column(headers.get(col, col), justify="right", no_wrap=True)
    if not narrow:
        table.add_column("description")
    for r in rows:
        cells = [r["preset"], r["family"], *(str(r[c]) for c in numeric[:-1])]
        cells.append(count(r["params"]) if narrow else render.fmt_count(r["params"]))
        if not narrow:
            cells.append(r["description"])
        table.add_row(*cells)
    render.console().print(table)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from rich.tree import Tree

    session = open_session(args, reads_text=False)
    summary = session.summary()
    if args.json:
        render.print_json(
            dict(
                name=session.name,
                source=session.source,
                family=summary.family,
                class_name=summary.class_name,
                device=str(session.device),
                dtype=str(session.dtype).removeprefix("torch."),
                config=summary.config,
                total_params=summary.total_params,
                non_embedding_params=summary.non_embedding_params,
                embedding_params=list(summary.embedding_params),
                total_bytes=summary.total_bytes,
                block_params=summary.block_params,
                parameters=summary.parameters,
                modules=[n for n in summary.modules.values() if n.depth <= args.depth],
            )
        )
        return 0
    console = render.console()
    narrow = render.narrow()
    fmt = count if narrow else render.fmt_count
    root_node = summary.modules[""]
    tree = Tree(f"[bold]{root_node.name}[/]  {render.fmt_count(root_node.params)} params")

    def add(branch, path: str) -> None:
        for child in summary.modules[path].children:
            node = summary.modules[child]
            if node.depth > args.depth:
                continue
            label = f"{node.name} [dim]{node.class_name}[/]"
            if node.params:
                label += f"  {fmt(node.params)}"
            add(branch.add(label), child)

    add(tree, "")
    console.print(tree)
    console.print(_parameter_table(summary, narrow))
    left_out = ", ".join(summary.embedding_params) or "nothing"
    if summary.tied_head_embedding:
        left_out += f"; the tied {summary.tied_head_embedding} is the head"
    console.print(
        f"[bold]{session.name}[/] ({summary.family}, {session.source}) on {session.device}, "
        f"{str(session.dtype).removeprefix('torch.')}: "
        f"{render.fmt_count(summary.total_params)} parameters (tied weights once), "
        f"{render.fmt_count(summary.non_embedding_params)} without embedding tables "
        f"({left_out}), {nbytes(summary.total_bytes)}"
    )
    return 0


def _parameter_table(summary, narrow: bool):
    """Every parameter with block subtotals. Narrow: names without `transformer.`, and
    dtype, device and grad left to the line below (they are the same for every row)."""
    strip = "transformer." if narrow else ""
    table = render.table("Parameters")
    cols = [("name", "left"), ("shape", "left"), ("numel", "right")]
    if not narrow:
        cols += [("dtype", "left"), ("device", "left"), ("grad", "left")]
    cols.append(("tied with", "left"))
    for col, just in cols:
        # Names fold rather than vanish; the other columns are short.
        table.add_column(col, justify=just, no_wrap=col != "name", overflow="fold")
    current_block: int | None = None
    for row in summary.parameters:
        if row.block != current_block and current_block is not None:
            table.add_row(
                f"[dim]block {current_block} subtotal[/]",
                "",
                f"[dim]{render.fmt_count(summary.block_params[current_block])}[/]",
                end_section=True,
            )
        current_block = row.block
        cells = [row.name.removeprefix(strip), short_shape(row.shape), render.fmt_count(row.numel)]
        if not narrow:
            cells += [row.dtype, row.device, "yes" if row.requires_grad else "no"]
        cells.append((row.tied_with or "").removeprefix(strip))
        table.add_row(*cells)
    return table


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..engine.analysis.doctor import diagnose

    session = open_session(args, reads_text=False)
    findings = diagnose(session)
    if args.json:
        render.print_json({f.topic: f.value for f in findings})
        return 0
    if render.is_terminal():
        from rich.text import Text

        # A two-column table keeps long findings aligned when they wrap at 80 columns.
        table = render.table()
        table.show_header = False
        table.add_column("topic", no_wrap=True, style="bold")
        table.add_column("finding", overflow="fold")
        for f in findings:
            table.add_row(f.topic, Text(f.text))  # findings quote user text: no markup
        render.console().print(table)
    else:
        width = max(len(f.topic) for f in findings)
        for f in findings:
            for i, line in enumerate(f.text.splitlines()):
                print(f"{f.topic if i == 0 else '':<{width}}  {line}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from ..engine.core.session import DEFAULT_SAMPLE, list_samples

    samples = list_samples()
    if args.json:
        render.print_json([dict(name=p.name, path=str(p)) for p in samples])
        return 0
    if not samples:
        print("no sample models are installed")
        return 0
    for p in samples:
        readme = p / "README.md"
        first = readme.read_text().splitlines()[0].lstrip("# ") if readme.exists() else ""
        first = first.removeprefix(f"{p.name}: ")  # the heading repeats the name
        mark = " (default)" if p.name == DEFAULT_SAMPLE else ""
        print(f"{p.name}{mark}: {first}")
    return 0
