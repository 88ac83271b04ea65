"""The parameter table and the module tree of a model: what `gpt-tui summary` prints.

Works on any nn.Module, on any device including `meta` (nothing is read from the
weights). Shared tensors (nanoGPT ties `lm_head.weight` to `transformer.wte.weight`)
are counted once, under the name they were first seen by, and marked as tied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ...models.config import config_to_dict
from ..core.trace import ModuleNode, ParamRow, ProbeKind

_BLOCK_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


def block_index(name: str) -> int | None:
    """Index of the repeated block a parameter or module path lies in (`transformer.h.3...`)."""
    match = _BLOCK_INDEX.search(name)
    return int(match.group(1)) if match else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def param_rows(model: nn.Module) -> list[ParamRow]:
    """Every parameter in registration order; a tensor shared under two names appears twice,
    the second time with `tied_with` naming the first."""
    first_name: dict[int, str] = {}
    rows = []
    for name, p in model.named_parameters(remove_duplicate=False):
        tied_with = first_name.setdefault(id(p), name)
        rows.append(
            ParamRow(
                name=name,
                shape=tuple(p.shape),
                numel=p.numel(),
                dtype=_dtype_name(p.dtype),
                device=str(p.device),
                requires_grad=p.requires_grad,
                tied_with=None if tied_with == name else tied_with,
                block=block_index(name),
                nbytes=p.numel() * p.element_size(),
            )
        )
    # The first name of a shared tensor is tied too: mark it with its partner's name.
    partners = {r.tied_with: r.name for r in rows if r.tied_with}
    return [
        ParamRow(**{**r.__dict__, "tied_with": partners[r.name]}) if r.name in partners else r
        for r in rows
    ]


def unique_rows(rows: list[ParamRow]) -> list[ParamRow]:
    """Rows with each shared tensor once (its first name)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r.tied_with is not None and r.tied_with in seen:
            continue
        seen.add(r.name)
        out.append(r)
    return out


@dataclass(frozen=True)
class ModelSummary:
    family: str
    class_name: str
    config: dict
    total_params: int  # shared tensors once
    non_embedding_params: int  # without the lookup tables below (nanoGPT: wpe only)
    total_bytes: int
    block_params: dict[int, int]  # per-block subtotals
    parameters: list[ParamRow]
    modules: dict[str, ModuleNode]  # by path; "" is the root
    embedding_params: tuple[str, ...] = ()  # tables left out of non_embedding_params
    tied_head_embedding: str | None = None  # an embedding shared with the head: counted


def embedding_tables(model: nn.Module) -> tuple[tuple[str, ...], str | None]:
    """Names of the lookup tables a non-embedding count leaves out, and the name of a table
    tied to the output head (it is a matmul there, so it counts, as in nanoGPT)."""
    owners: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(module)
    tables, tied = [], None
    for path, module in model.named_modules():
        if not isinstance(module, nn.Embedding):
            continue
        name = f"{path}.weight" if path else "weight"
        if any(not isinstance(m, nn.Embedding) for m in owners[id(module.weight)]):
            tied = tied or name
        else:
            tables.append(name)
    return tuple(tables), tied


def module_tree(
    model: nn.Module, kinds: dict[str, ProbeKind] | None = None
) -> dict[str, ModuleNode]:
    """All modules by path, each with its class, probe kind and parameters (shared once)."""
    kinds = kinds or {}
    nodes: dict[str, ModuleNode] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        unique = {id(p): p for p in module.parameters()}
        children = tuple(f"{path}.{n}" if path else n for n, _ in module.named_children())
        nodes[path] = ModuleNode(
            path=path,
            name=path.rsplit(".", 1)[-1] if path else type(model).__name__,
            class_name=type(module).__name__,
            kind=kinds.get(path),
            depth=0 if not path else path.count(".") + 1,
            params=sum(p.numel() for p in unique.values()),
            children=children,
        )
    return nodes


def summarize(
    model: nn.Module, family: str = "unknown", kinds: dict[str, ProbeKind] | None = None
) -> ModelSummary:
    rows = param_rows(model)
    unique = unique_rows(rows)
    total = sum(r.numel for r in unique)
    per_block: dict[int, int] = {}
    for r in unique:
        if r.block is not None:
            per_block[r.block] = per_block.get(r.block, 0) + r.numel
    tables, tied = embedding_tables(model)
    sizes = {r.name: r.numel for r in unique}
    config = getattr(model, "config", None)
    config_dict = {}
    if config is not None:
        try:
            config_dict = config_to_dict(config)
        except TypeError:  # a user's own config class that is not one of ours
            config_dict = {k: v for k, v in vars(config).items() if not k.startswith("_")}
    return ModelSummary(
        family=family,
        class_name=type(model).__name__,
        config=config_dict,
        total_params=total,
        non_embedding_params=total - sum(sizes.get(name, 0) for name in tables),
        total_bytes=sum(r.nbytes for r in unique),
        block_params=per_block,
        parameters=rows,
        modules=module_tree(model, kinds),
        embedding_params=tables,
        tied_head_embedding=tied,
    )
