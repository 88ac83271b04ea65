"""`gpt_tui.watch` under torchrun: 2 processes, gloo on CPU, DDP over the `tiny` model, a
NaN put into h.1.mlp's weight on rank 1 at step 3 (tests/fixtures/ranks/ddp_train.py).
One launch, bounded by a timeout, serves every test here."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.engine.training.watch_case import case_folder, replay_case
from gpt_tui.engine.training.watch_ranks import resolve_case_dir

SCRIPT = Path(__file__).parent / "fixtures" / "ranks" / "ddp_train.py"
pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ranks")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), str(SCRIPT), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [json.loads((out / f"result{r}.json").read_text()) for r in (0, 1)]


def where(found: dict) -> tuple:
    return (found["step"], found["phase"], found["where"], found["rank"], found["ranks"])


def test_every_rank_names_the_same_first_finding(launched) -> None:
    _, results = launched
    first = [r["report"]["finding"] for r in results]
    assert where(first[0]) == where(first[1]) == (3, "forward", "transformer.h.1.mlp", 1, [1])
    assert first[1]["summary"].startswith(
        "step 3: the first non-finite value is on rank 1 in forward at transformer.h.1.mlp"
    )
    assert all(r["report"]["error"] is None for r in results)  # "report" goes on
    # the weight is named where it holds the NaN: on rank 1 (rank 0's weights are finite)
    weight = {"name": "transformer.h.1.mlp.c_fc.weight", "nan": 1, "inf": 0}
    assert [f["held"] for f in first] == [[], [weight]]
    assert "c_fc.weight already held 1 NaN at this forward" in first[1]["summary"]


def test_the_nan_reaching_rank_0_through_the_all_reduce_is_named_as_received(launched) -> None:
    _, results = launched
    summary = results[0]["report"]["finding"]["summary"]
    assert summary.startswith(
        "rank 0 received non-finite gradients from the all-reduce of step 3; the first "
        "non-finite value was on rank 1, step 3, forward, transformer.h.1.mlp"
    )
    assert results[1]["report"]["finding"]["received"] is None


def test_raise_raises_on_every_rank_together_with_micro_steps(launched) -> None:
    _, results = launched
    errors = [r["raise"]["error"] for r in results]
    assert all(errors), "every rank raised NonFiniteError"
    found = [r["raise"]["finding"] for r in results]
    assert where(found[0]) == where(found[1]) == (3, "forward", "transformer.h.1.mlp", 1, [1])
    assert [(f["micro_step"], f["micro_steps"]) for f in found] == [(1, 2), (1, 2)]
    assert "step 3, micro-step 1 of 2, forward" in errors[0]
    assert [len(r["raise"]["losses"]) for r in results] == [8, 8]  # raised at step 3's end


def test_on_open_under_torchrun_raises_on_every_rank_as_raise_does(launched) -> None:
    _, results = launched
    found = [r["open"]["finding"] for r in results]
    assert where(found[0]) == where(found[1]) == (3, "forward", "transformer.h.1.mlp", 1, [1])
    assert [r["open"]["error"] for r in results] == [f["summary"] for f in found]
    assert [len(r["open"]["losses"]) for r in results] == [4, 4]  # no step after step 3


def test_with_nothing_wrong_the_watch_changes_no_loss_under_ddp(launched) -> None:
    _, results = launched
    for r in results:
        assert r["clean"]["finding"] is None and r["clean"]["losses"] == r["bare"]["losses"]


def test_each_rank_writes_its_case_and_the_first_ranks_case_reopens(launched) -> None:
    out, _ = launched
    report = out / "report"
    top = json.loads((report / "case.json").read_text())
    assert (top["first_rank"], top["world_size"]) == (1, 2)
    assert top["ranks"] == {"0": "rank0", "1": "rank1"}
    for rank in (0, 1):
        case = json.loads((case_folder(report / f"rank{rank}") / "case.json").read_text())
        assert case["finding"]["step"] == 3 and case["finding"]["rank"] == 1
    folder, note = resolve_case_dir(report)
    assert folder == report / "rank1"
    assert note.startswith("a case of 2 ranks (rank 0, rank 1 saved here): opening rank 1")
    again, session = replay_case(folder)
    session.close()
    assert (again.phase, again.where) == ("forward", "transformer.h.1.mlp")


def test_a_one_process_case_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_case_dir(tmp_path) == (tmp_path, None)
    (tmp_path / "case.json").write_text('{"finding": {}, "checkpoint": "ckpt.pt"}')
    assert resolve_case_dir(tmp_path) == (tmp_path, None)


def test_rank_0s_top_case_that_cannot_be_written_says_so_and_never_raises(tmp_path) -> None:
    from gpt_tui.engine.training.watch import Finding
    from gpt_tui.engine.training.watch_ranks import write_ranks_case

    blocker = tmp_path / "file"
    blocker.write_text("")
    finding = Finding(3, "forward", "transformer.h.1.mlp", "its input was finite", rank=1)
    failed = write_ranks_case(blocker / "report", finding, 2)
    assert failed is not None and "case.json could not be written" in failed
    assert write_ranks_case(tmp_path / "report", finding, 2) is None
    top = json.loads((tmp_path / "report" / "case.json").read_text())
    assert top["command"] == f"gpt-tui train-step --case {tmp_path / 'report' / 'rank1'}"


def test_a_ranks_line_reaches_the_shared_pipe_in_one_write(monkeypatch) -> None:
    """Ranks share torchrun's pipe; with PYTHONUNBUFFERED `print` wrote the newline apart,
    and two ranks' "listening on" lines came out as one (a CI failure)."""
    from gpt_tui.errors import tell

    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            writes.append("<flush>")

    monkeypatch.setattr(sys, "stderr", Recorder())
    tell("[rank 1] gpt_tui.watch: step 3: a NaN")
    assert writes == ["[rank 1] gpt_tui.watch: step 3: a NaN\n", "<flush>"]


START_SCRIPT = """
import dataclasses, json, sys
from pathlib import Path
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import gpt_tui
from gpt_tui.models import build_model, make_config

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
model.train()
ddp = DDP(model)
optimizer = torch.optim.AdamW(ddp.parameters())
gen = torch.Generator().manual_seed(100 + rank)
with gpt_tui.watch(ddp, optimizer=optimizer, on="report", report=None) as handle:
    for step in range(4):
        x, y = (torch.randint(65, (2, 16), generator=gen) for _ in range(2))
        _, loss = ddp(x, y)
        (loss * float("nan") if (rank, step) == (1, 2) else loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
finding = handle.finding
result = {**dataclasses.asdict(finding), "summary": finding.summary}
Path(sys.argv[1], f"start{rank}.json").write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()
"""


def test_a_loss_made_nan_on_one_rank_is_named_at_its_start_on_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "start.py"
    script.write_text(START_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), str(script), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [json.loads((tmp_path / f"start{r}.json").read_text()) for r in (0, 1)]
    assert where(found[0]) == where(found[1]) == (2, "loss", "loss", 1, [1])
    assert found[1]["detail"].startswith("the loss backward() started from was NaN")
    assert found[0]["summary"].startswith(
        "rank 0 received non-finite gradients from the all-reduce of step 2; the first "
        "non-finite value was on rank 1, step 2, loss, loss (the model's loss was finite, the "
        "gradient into it not"
    )
    assert found[0]["unreplayable"] == found[1]["unreplayable"] is not None


def test_on_report_after_a_finding_every_rank_exits_cleanly(tmp_path: Path) -> None:
    # After the finding the watch stops its per-step exchange; without the barrier it then
    # runs on leaving, DDP's last work was left to a gloo thread at exit (SIGABRT).
    example = Path(__file__).parents[1] / "examples" / "ddp_train_watch.py"
    for _ in range(3):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_port", str(free_port()), str(SCRIPT.parent / "hold_gil.py")]
        command += [str(example), "--break-rank", "1", "--micro-steps", "4", "--on", "report"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "step 5: loss nan" in done.stdout
        assert "terminate called" not in done.stderr


def test_a_block_ending_normally_under_a_group_ends_with_one_barrier(monkeypatch) -> None:
    # The barrier is what lets gloo's worker drop DDP's last work before the script exits;
    # a block left by an exception (every rank raising together, or one rank failing) has none.
    import gpt_tui
    from gpt_tui.engine.training import watch as watch_module
    from gpt_tui.models import build_model, make_config

    barriers: list[int] = []
    monkeypatch.setattr(watch_module, "process_group", lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: barriers.append(1))
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    with gpt_tui.watch(model, optimizer=optimizer, on="report", report=None):
        pass
    assert barriers == [1]
    with pytest.raises(KeyError), gpt_tui.watch(model, optimizer=optimizer, report=None):
        raise KeyError("the loop failed")
    assert barriers == [1]
