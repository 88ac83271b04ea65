"""`gpt_tui.watch` with nanochat's real distributed optimizer (`MuonAdamW` of
`nanochat/optim.py`, imported from a nanochat checkout, never copied here) under torchrun,
2 processes, gloo on CPU: a NaN made on rank 1 is named identically on every rank, and
`on="raise"` stops every rank, no hang.

Runs where GPT_TUI_NANOCHAT names a nanochat checkout (the folder holding `nanochat/`).

Two things of this machine's torch (2.13, CPU) the harness works around, outside nanochat:
- gloo's reduce-scatter returns a Work that implements `wait()` and not `get_future()`
  ("Work::getFuture not implemented"; gloo builds it from an all-reduce wrapped in a
  lambda work), and `MuonAdamW` calls `.get_future()` on it. The harness wraps
  `dist.reduce_scatter_tensor`: it waits, then hands back a completed future (the overlap
  is lost; the values are the same).
- `MuonAdamW`'s fused steps are `@torch.compile(fullgraph=True)`; inductor would compile
  them with a C++ compiler for minutes here, so the harness compiles them with the `eager`
  backend (traced by dynamo, run eagerly).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

NANOCHAT = os.environ.get("GPT_TUI_NANOCHAT")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (NANOCHAT and (Path(NANOCHAT) / "nanochat" / "optim.py").is_file()),
        reason="GPT_TUI_NANOCHAT does not name a nanochat checkout (with nanochat/optim.py)",
    ),
]

SCRIPT = """
import functools, math, sys
import torch
import torch.distributed as dist

torch.compile = functools.partial(torch.compile, backend="eager")
from nanochat.optim import MuonAdamW

import gpt_tui
from gpt_tui.models import build_model, make_config

gloo_reduce_scatter = dist.reduce_scatter_tensor


class Waited:
    def __init__(self, work, out):
        self.work, self.out = work, out

    def wait(self):
        return self.work.wait()

    def get_future(self):
        self.work.wait()
        future = torch.futures.Future()
        future.set_result([self.out])
        return future


def reduce_scatter_tensor(output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):
    work = gloo_reduce_scatter(output, input, op=op, group=group, async_op=async_op)
    return Waited(work, output) if async_op else work


dist.reduce_scatter_tensor = reduce_scatter_tensor
on, report = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
# a vocabulary that splits over 2 ranks: MuonAdamW reduce-scatters an AdamW matrix by rows
model = build_model(make_config("tiny", "nanochat", {"vocab_size": 64}), "cpu", seed=0)
matrices = [p for p in model.transformer.h.parameters() if p.dim() == 2]
others = [p for p in model.parameters() if all(p is not m for m in matrices)]
groups = [dict(kind="adamw", params=others, lr=1e-3, betas=(0.8, 0.95), eps=1e-10,
               weight_decay=0.0)]
for shape in sorted({p.shape for p in matrices}):
    groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape],
                       lr=0.02, momentum=0.95, ns_steps=5, beta2=0.9, weight_decay=0.0))
opt = MuonAdamW(groups)
gen = torch.Generator().manual_seed(1 + rank)
try:
    with gpt_tui.watch(model, optimizer=opt, on=on, report=report):
        for step in range(6):
            if step == 3 and rank == 1:
                with torch.no_grad():
                    model.transformer.h[1].mlp.c_fc.weight[0, 0] = math.nan
            x = torch.randint(64, (2, 16), generator=gen)
            loss = model(x, x.roll(-1, 1))
            loss = loss[1] if isinstance(loss, tuple) else loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            print(f"rank {rank} step {step}: loss {loss.item():.4f}", flush=True)
except gpt_tui.NonFiniteError as err:
    print(f"rank {rank} raised at step {err.finding.step}", flush=True)
dist.barrier()  # both ranks past every collective before the group goes (see test_listen)
dist.destroy_process_group()
"""

NAMED = "step 3: the first non-finite value is on rank 1 in forward at transformer.h.1.mlp"


def _torchrun(tmp_path: Path, on: str) -> str:
    script = tmp_path / "nanochat_watch.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (NANOCHAT, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), on, str(tmp_path / "report")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,  # the ranks end with the test, whatever happens
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=300)  # a hang's bound
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    return out


def test_nanochat_optimizer_finding_is_named_alike_on_every_rank(tmp_path: Path) -> None:
    out = _torchrun(tmp_path, "report")
    for rank in (0, 1):
        assert f"gpt-tui (rank {rank}): {NAMED}" in out, out
        assert (tmp_path / "report" / f"rank{rank}" / "latest").is_file()
    assert (tmp_path / "report" / "case.json").is_file()
    assert "rank 0 step 2: loss" in out and "rank 1 step 5: loss nan" in out


def test_nanochat_optimizer_raise_stops_every_rank(tmp_path: Path) -> None:
    out = _torchrun(tmp_path, "raise")
    assert "rank 0 raised at step 3" in out and "rank 1 raised at step 3" in out, out
    assert "step 3: loss" not in out  # neither rank finished the step
