"""`watch` under torch.distributed: the ranks agree on the first finding.

Each rank keeps its first non-finite key on its device: an int64 that orders what it saw
(micro-step, then forward < loss < backward, then the module's place in that order;
`NO_KEY` for nothing). Once per checked step the ranks exchange these keys in one
all_gather of a few int64s before the optimizer's step, and once more after it; then every
rank decides the same thing from the same table. Nothing here opens a transport of its
own: the collectives run on the user's process group (the default one).

A case of several ranks is one folder per rank (`<report>/rank<N>/`) and, written by
rank 0, a `case.json` at the top naming the first finding and the ranks it holds:
`resolve_case_dir` turns such a folder into the rank to open.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...io.checkpoints.save import atomic_write_text

if TYPE_CHECKING:
    from .watch_finding import Finding

NO_KEY = 2**62  # "nothing non-finite", larger than any key
MICRO_STRIDE = 2**24  # a key is micro_step * MICRO_STRIDE + place in the step's order
RANKS_FILE = "case.json"


def process_group() -> tuple[int, int] | None:
    """(rank, world size) when torch.distributed is initialised with more than one
    process; None otherwise (a single process is watched exactly as without torchrun)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def exchange(values: list[torch.Tensor], world: int) -> list[list[int]]:
    """Every rank's `values` (0-dim int64 tensors), in rank order: one all_gather and one
    host read. NCCL takes them on the rank's current CUDA device (untested here), gloo on
    the CPU."""
    nccl = "nccl" in str(torch.distributed.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    mine = torch.stack([v.to(device=device, dtype=torch.int64) for v in values])
    table = [torch.empty_like(mine) for _ in range(world)]
    torch.distributed.all_gather(table, mine)
    return torch.stack(table).cpu().tolist()


def first_bad(bad: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """The smallest `offset + i` where `bad[i]`, else NO_KEY: a 0-dim int64 on bad's device."""
    places = torch.arange(bad.numel(), device=bad.device, dtype=torch.int64) + offset
    none = torch.full_like(places, NO_KEY)
    return torch.where(bad, places, none).min() if bad.numel() else places.new_tensor(NO_KEY)


def rank_folder(report: Path, rank: int) -> Path:
    return report / f"rank{rank}"


def write_ranks_case(report: Path, finding: Finding, world: int) -> str | None:
    """Rank 0's `case.json` at the top of a multi-rank report: the first finding, which
    rank's case reproduces it, and every rank's folder. Never raises (a rank that raised
    here would leave the others waiting in a collective): returns why it failed, or None."""
    first = finding.rank if finding.rank is not None else 0
    folder = rank_folder(report, first)
    case = {
        "folder": str(report),
        "finding": dataclasses.asdict(dataclasses.replace(finding, received=None)),
        "summary": dataclasses.replace(finding, received=None, report=None).summary,
        "world_size": world,
        "first_rank": first,
        "ranks": {str(r): rank_folder(report, r).name for r in range(world)},
        "command": f"gpt-tui train-step --case {folder}",
    }
    try:
        report.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report / RANKS_FILE, json.dumps(case, indent=2) + "\n")
    except OSError as err:
        return f"{report / RANKS_FILE} could not be written: {err}"
    return None


def resolve_case_dir(path: str | Path) -> tuple[Path, str | None]:
    """The folder of one rank's case to open for `path`: `path` itself for a one-process
    case; for a multi-rank report, the first finding's rank, with a note naming the ranks
    it holds (None when there is nothing to say)."""
    folder = Path(path)
    try:
        top = json.loads((folder / RANKS_FILE).read_text())
    except (OSError, ValueError):
        return folder, None  # not a multi-rank report: read_case says what is wrong
    if not isinstance(top, dict) or not isinstance(top.get("ranks"), dict):
        return folder, None
    ranks = {str(r): str(name) for r, name in top["ranks"].items()}
    first = str(top.get("first_rank", min(ranks, key=int)))
    here = sorted((r for r in ranks if (folder / ranks[r]).is_dir()), key=int)
    if first not in here and here:
        first = here[0]
    chosen = folder / ranks.get(first, f"rank{first}")
    names = ", ".join(f"rank {r}" for r in here) or "no rank folder"
    note = (
        f"a case of {len(ranks)} ranks ({names} saved here): opening rank {first}, where "
        f"the first non-finite value was; another rank: --case {folder / 'rank<N>'}"
    )
    return chosen, note
