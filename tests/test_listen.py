"""`gpt_tui.listen` + `gpt-tui attach`: a real training loop in a subprocess, attached to
at a step boundary; the run's losses are those of an unattached run."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.cli import run
from gpt_tui.models import build_model, make_config

SCRIPT = Path(__file__).parent / "fixtures" / "listen" / "train.py"
# One torch thread in the run, as in unattached_losses here (the tests' conftest): over
# enough steps, a run on 2 threads and one on 1 part ways in the last bits.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


def unattached_losses(n: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(make_config("tiny", "nanogpt", {"dropout": 0.1}), "cpu", seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(n):
        x = torch.randint(65, (2, 16), generator=gen)
        y = torch.randint(65, (2, 16), generator=gen)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_attach_reads_a_live_run_which_goes_on_unchanged(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.sock"
    train = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path), "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    try:
        first = train.stderr.readline()  # blocks until the run listens
        assert f"listening on {path}" in first
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert run(["attach", str(path), "--do", "forward", "--do", "train-step", "--json"]) == 0
        answers = json.loads(capsys.readouterr().out)
        state = answers["state"]
        assert state["step"] >= 1 and state["model"] == "GPT" and state["batch"] == [[2, 16]] * 2
        assert answers["forward"]["logits"]["shape"] == [2, 16, 65]
        assert answers["forward"]["logits"]["finite"] is True
        assert answers["train-step"]["grad_norm"] > 0
        assert 0 < answers["train-step"]["max_relative_change"] < 1
        first_client = socket.socket(socket.AF_UNIX)  # waits for the next boundary
        first_client.connect(str(path))
        assert run(["attach", str(path)]) == 2  # a second client meanwhile: refused
        assert "the run refused: busy" in capsys.readouterr().err
        reader = first_client.makefile("r")
        assert "attached" in json.loads(reader.readline())
        first_client.sendall(b'{"op": "detach"}\n')
        assert "detached" in json.loads(reader.readline())
        first_client.close()
        lost = socket.socket(socket.AF_UNIX)  # a client that goes away at once
        lost.connect(str(path))
        lost.close()
        out, err = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, err
    assert "the client detached; the run goes on" in err
    assert "the client went away" in err
    assert "refused a second client: one is attached" in err
    losses = json.loads(out)
    assert losses == unattached_losses(len(losses))  # bit for bit, dropout included
    assert not path.exists()


def test_attach_with_nothing_listening_is_one_line(tmp_path: Path, capsys) -> None:
    assert run(["attach", str(tmp_path / "none.sock")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run listens on" in err


def test_listen_arguments_are_checked_up_front(tmp_path: Path) -> None:
    import gpt_tui
    from gpt_tui.errors import GptTuiError

    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    for given, message in ((model, "listen needs optimizer="), ("model", "the torch.nn.Module")):
        with (
            pytest.raises(GptTuiError, match=message),
            gpt_tui.listen(given, optimizer=None, path=tmp_path / "a.sock"),
        ):
            pass
    assert not (tmp_path / "a.sock").exists()


async def _settle(pilot) -> None:
    for _ in range(3):  # a finished worker may have queued the next engine call
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def test_attach_app_opens_a_copy_of_the_live_state_and_q_lets_the_run_go_on(
    tmp_path: Path, capsys
) -> None:
    import asyncio

    from gpt_tui.cli.attach_cmd import run_attach
    from gpt_tui.cli.parser import parse_args

    path = tmp_path / "run.sock"
    train = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path), "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    seen: dict = {}

    async def drive(app) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await _settle(pilot)
            seen["case"] = Path(app.spec.checkpoint).parent
            seen["batch"] = app.state.training.batch
            await pilot.press("6", "c")  # the Train tab: a whole step, on the copy
            await _settle(pilot)
            seen["loss"] = app.state.training.loss
            await pilot.press("q")

    try:
        assert f"listening on {path}" in train.stderr.readline()
        args = parse_args(["attach", str(path), "--app"])
        assert run_attach(args, run=lambda app: asyncio.run(drive(app))) == 0
        out, err = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, err
    printed = capsys.readouterr().out
    assert "paused: the live run, pid" in printed and "detached: the run goes on" in printed
    batch = seen["batch"]  # the run's own last batch, both rows, in the Train tab
    assert batch is not None and len(batch.rows) == 2 and "the live run" in batch.source
    assert 0 < seen["loss"] < 10
    assert "gpt-tui-attach-" in str(seen["case"]) and not seen["case"].exists()
    losses = json.loads(out)
    assert losses == unattached_losses(len(losses))  # the copy's step changed nothing


DIST_SCRIPT = """
import json, sys, torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import gpt_tui
from gpt_tui.models import build_model, make_config

mode, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
model = DistributedDataParallel(build_model(make_config("tiny", "nanogpt"), "cpu", seed=0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(1 + rank)
losses = []


def train(listener):
    after = 0
    while len(losses) < steps and after < 3:
        x = torch.randint(65, (2, 16), generator=gen)
        _, loss = model(x, x.roll(-1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if listener is not None:  # every rank stops together, 3 steps after the attach
            done = torch.tensor([listener.clients])
            dist.all_reduce(done, op=dist.ReduceOp.MAX)
            after += int(done.item()) >= 1


if mode == "listen":
    with gpt_tui.listen(model, optimizer=opt, every=5) as listener:
        train(listener)
else:
    train(None)
print(json.dumps({"rank": rank, "losses": losses}), flush=True)
# Both ranks past every collective, and DDP's reducer gone, before the group goes: gloo
# aborted one rank's exit ("terminate called without an active exception") once in CI.
del model, opt
dist.barrier()
dist.destroy_process_group()
"""


def _torchrun(folder: Path, mode: str, steps: int) -> subprocess.Popen:
    import os

    script = folder / "dist_train.py"
    script.write_text(DIST_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.Popen(
        [*command, "--nproc_per_node", "2", str(script), mode, str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # the ranks end with the test, whatever happens
    )


def _rank_losses(lines: list[str]) -> dict[int, list[float]]:
    # the ranks print at once into one pipe: their lines may run together
    found = {}
    for match in re.finditer(r'\{"rank": \d+, "losses": \[[^\]]*\]\}', "".join(lines)):
        data = json.loads(match[0])
        found[data["rank"]] = data["losses"]
    return found


@pytest.mark.slow
def test_attach_to_one_rank_under_torchrun_holds_every_rank_at_that_step(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import os
    import signal
    import tempfile
    import threading

    runtime = Path(tempfile.mkdtemp(prefix="gl-"))  # short: a socket's path is limited
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    proc = _torchrun(tmp_path, "listen", 5000)
    watchdog = threading.Timer(300, os.killpg, (proc.pid, signal.SIGKILL))  # a hang's bound
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:  # both ranks listen before the attach
            lines.append(line)
            if sum(seen.count("listening on") for seen in lines) == 2:
                break
        assert "--rank 1)" in "".join(lines)
        assert run(["attach", "--rank", "1", "--json"]) == 0
        state = json.loads(capsys.readouterr().out)["state"]
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(runtime, ignore_errors=True)
    log = "".join(lines)
    assert state["step"] % 5 == 0  # a boundary where the ranks exchanged the flag
    assert f"rank 0 waits at step {state['step']} while another rank is attached" in log
    attached = _rank_losses(lines)
    bare = _torchrun(tmp_path, "bare", len(attached[0]))
    out, _ = bare.communicate(timeout=300)
    assert bare.returncode == 0, out
    assert attached == _rank_losses(out.splitlines()) and len(attached) == 2


def test_several_ranks_listening_ask_for_a_rank(monkeypatch, capsys) -> None:
    import os
    import tempfile

    runtime = Path(tempfile.mkdtemp(prefix="gl-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    from gpt_tui.listener import socket_folder

    servers = []  # two ranks of one live run (this process)
    try:
        for rank in (0, 1):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(socket_folder() / f"{os.getpid()}.rank{rank}.sock"))
            servers.append(server)
        assert run(["attach"]) == 2
        err = capsys.readouterr().err
        assert "2 runs are listening" in err and "give a rank (gpt-tui attach --rank N)" in err
        assert run(["attach", "--rank", "2"]) == 2
        assert "no rank 2 is listening" in capsys.readouterr().err
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(runtime)


@pytest.mark.e2e
def test_attach_app_in_a_real_terminal(tmp_path: Path, terminal) -> None:
    import os
    import shlex

    path = tmp_path / "run.sock"
    train = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path), "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    exit_file = tmp_path / "exit"
    env = f"GPT_TUI_HIDE_MEMORY=1 PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))}"
    shell = (
        f"env {env} {shlex.quote(sys.executable)} -m gpt_tui attach {path} --app; "
        f"echo EXIT=$? > {exit_file}; sleep 60"
    )
    screen = terminal.screen
    try:
        assert f"listening on {path}" in train.stderr.readline()
        terminal.start(shell, 100, 30)
        # the run's checkpoint in the header and the prompt bar: in any layout (a narrow
        # terminal steps the module tree aside)
        opened = lambda: "ckpt.pt nanogpt" in screen() and "prompt ›" in screen()  # noqa: E731
        terminal.wait_for("the app on the run's copy", opened)
        terminal.keys("6")
        terminal.wait_for(
            "the Train tab on the run's batch", lambda: "from the run's batch" in screen()
        )
        terminal.keys("q")
        terminal.wait_for("the attach to end", exit_file.exists)
        assert exit_file.read_text().strip() == "EXIT=0"
        assert "detached: the run goes on" in screen()
        out, err = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, err
    losses = json.loads(out)
    assert losses == unattached_losses(len(losses))
