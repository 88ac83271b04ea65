"""Saves never lose a model: training killed with SIGKILL at random moments, many times,
always leaves a loadable checkpoint, and the next run resumes from it exactly."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.io.checkpoints import load_checkpoint
from gpt_tui.io.checkpoints.save import atomic_write

SERVER = Path(__file__).with_name("save_loop_server.py")
REPO = Path(__file__).resolve().parents[2]


class Lines:
    """Line reads from a pipe that can give up after a timeout (select, not sleep)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def read(self, timeout: float | None = 60.0) -> str | None:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError("the save-loop server ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


@pytest.fixture
def server():
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    yield proc, Lines(proc.stdout.fileno())
    proc.stdin.close()
    proc.wait(timeout=60)


def _run(server, out: Path, arch: str, steps: int) -> None:
    proc, _ = server
    proc.stdin.write(f"run {out} {arch} {steps}\n".encode())
    proc.stdin.flush()


def _recorded_step(out: Path) -> int:
    """The step of the checkpoint on disk, read through the real loader."""
    loaded = load_checkpoint(out)
    return int(loaded.info.get("iter_num", loaded.info.get("step")))


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_kill_9_during_saves_never_loses_the_model(tmp_path, server, arch):
    rng = random.Random(f"kill-{arch}")
    out = tmp_path / "run"
    lines = server[1]
    steps, kills, step_on_disk = 60, 11, 0  # 11 rounds advance at most 47 steps
    for _ in range(kills):
        _run(server, out, arch, steps)
        pid = int(lines.read().removeprefix("pid "))
        first = next(line for line in iter(lines.read, None) if not line.startswith("writing"))
        # The child resumed from what the last kill left: its first save is the next step.
        assert first == f"saved {step_on_disk + 1}", first
        last_saved = step_on_disk + 1
        # Kill at a random moment inside one of the next few file writes.
        writes = rng.randint(1, 6)
        while writes:
            line = lines.read()
            if line.startswith("saved "):
                last_saved = int(line.removeprefix("saved "))
            writes -= line.startswith("writing ")
        line = lines.read(timeout=rng.uniform(0.0, 0.002))
        os.kill(pid, signal.SIGKILL)
        while line is None or not line.startswith("ended"):
            if line is not None and line.startswith("saved "):
                last_saved = int(line.removeprefix("saved "))
            line = lines.read()
        assert line == f"ended {signal.SIGKILL}"  # killed, not finished
        step_on_disk = _recorded_step(out)
        assert step_on_disk >= last_saved  # a completed save is never lost
        assert (out / f"optim_{step_on_disk:06d}.pt").is_file()
    assert step_on_disk < steps

    # Finish the interrupted run, then the same run without interruptions: same weights.
    _run(server, out, arch, steps)
    for line in iter(lines.read, "ended 0"):
        assert line.startswith(("pid", "saved", "writing")), line
    straight = tmp_path / "straight"
    _run(server, straight, arch, steps)
    for line in iter(lines.read, "ended 0"):
        assert line.startswith(("pid", "saved", "writing")), line
    a, b = load_checkpoint(out).model.state_dict(), load_checkpoint(straight).model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not list(out.glob(".*.tmp"))  # the leftovers of killed saves were cleaned up
    if arch == "nanochat":
        assert [f.name for f in out.glob("model_*.pt")] == [f"model_{steps:06d}.pt"]


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
