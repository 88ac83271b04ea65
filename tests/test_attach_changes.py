"""`gpt-tui attach --app --allow-changes`: a weight changed in the app (the Code tab's
`!statement`) reaches the live run at the step boundary, and its next losses are those of
a run changed there; without the flag nothing reaches it. What the run receives is checked:
a name it does not know, another shape, bytes that are no tensor file: refused, one line,
the run goes on unchanged. `watch(..., listen=...)`: attach shows the watch's figures."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_listen import ONE_THREAD, SCRIPT, unattached_losses

import gpt_tui.models.nanogpt as nanogpt_module
from gpt_tui.cli import run
from gpt_tui.cli.attach_cmd import run_attach
from gpt_tui.cli.parser import parse_args
from gpt_tui.listener.wire import receive, send
from gpt_tui.models import build_model, make_config

CHANGED = "transformer.h.0.attn.c_proj.weight"  # the first attention's `self.c_proj`
pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


def changed_losses(n: int, at: int, change: Callable[[torch.nn.Module], None]) -> list[float]:
    """unattached_losses, with `change` made to the model after `at` optimizer steps."""
    torch.manual_seed(0)
    model = build_model(make_config("tiny", "nanogpt", {"dropout": 0.1}), "cpu", seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(n):
        if step == at:
            with torch.no_grad():
                change(model)
        x = torch.randint(65, (2, 16), generator=gen)
        y = torch.randint(65, (2, 16), generator=gen)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )


def _kernel_line() -> int:
    lines = Path(nanogpt_module.__file__).read_text().splitlines()
    return next(i for i, t in enumerate(lines, 1) if "y = F.scaled_dot_product_attention(" in t)


async def _settle(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def _submit(pilot, selector: str, text: str) -> None:
    from textual.widgets import Input

    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    await pilot.press("enter")
    await _settle(pilot)


@pytest.mark.parametrize("allow", [True, False], ids=["allow-changes", "read-only"])
def test_a_weight_changed_in_the_app_reaches_the_run_only_when_allowed(
    tmp_path: Path, capsys, allow: bool
) -> None:
    path = tmp_path / "run.sock"
    train = _start(str(path), "1")
    seen: dict = {}

    async def drive(app) -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _settle(pilot)
            await pilot.press("7")  # the Code tab: pause in the first attention, zero a weight
            await _submit(pilot, "#code-break", f"nanogpt.py:{_kernel_line()}")
            await pilot.press("escape", "C")
            await _settle(pilot)
            assert app.state.frame is not None and app.state.frame.line == _kernel_line()
            await _submit(pilot, "#code-eval", "!self.c_proj.weight.data.zero_()")
            seen["error"] = app.state.evaluations[-1].error
            await pilot.press("6", "c")  # a training step on the copy: its weights come back
            await _settle(pilot)
            await pilot.press("q")

    try:
        assert f"listening on {path}" in train.stderr.readline()
        args = ["attach", str(path), "--app", *(["--allow-changes"] if allow else [])]
        assert run_attach(parse_args(args), run=lambda app: asyncio.run(drive(app))) == 0
        out, log = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, log
    assert seen["error"] is None
    printed = capsys.readouterr().out
    step = int(printed.split("attached to pid ")[1].split(" at step ")[1].split(":")[0])
    losses = json.loads(out)
    if not allow:
        assert "applied" not in log and "applied" not in printed
        assert losses == unattached_losses(len(losses))
        return
    whole = 32 * 32
    assert f"applied in the run: {CHANGED} ({whole:,} of {whole:,} elements changed)" in printed
    applied = [line for line in log.splitlines() if "applied the client's changes" in line]
    assert applied == [
        f"gpt-tui listen: applied the client's changes at step {step}: {CHANGED} "
        f"({whole:,} of {whole:,} elements changed); the optimizer's state carries on"
    ]
    zero = lambda m: m.transformer.h[0].attn.c_proj.weight.zero_()  # noqa: E731
    # bit for bit: the zeroed weight from that step on, Adam's moments carried on
    assert losses == changed_losses(len(losses), step, zero)
    assert losses[step] != unattached_losses(step + 1)[step]  # the next loss reflects it


@pytest.mark.e2e
def test_a_weight_zeroed_in_a_real_terminal_reaches_the_run(tmp_path: Path, terminal) -> None:
    """What a user types: the Code tab's boxes reached with `e`, the quit question, the
    lines printed after the app; the run's next losses are those of a run changed there."""
    import os
    import shlex

    path = tmp_path / "run.sock"
    exit_file = tmp_path / "exit"
    env = f"GPT_TUI_HIDE_MEMORY=1 PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))}"
    shell = (
        f"env {env} {shlex.quote(sys.executable)} -m gpt_tui attach {path} --app "
        f"--allow-changes; echo EXIT=$? > {exit_file}; sleep 60"
    )
    screen = terminal.screen
    train = _start(str(path), "1")
    try:
        assert f"listening on {path}" in train.stderr.readline()
        terminal.start(shell, 120, 40)
        terminal.wait_for("the app on the run's copy", lambda: "prompt ›" in screen())
        terminal.keys("7", "e")  # the Code tab, its break-at box
        terminal.keys("-l", f"nanogpt.py:{_kernel_line()}")
        terminal.keys("Enter")  # the user sees it listed, then runs to it
        listed = f"1 break nanogpt.py:{_kernel_line()}"
        terminal.wait_for("the breakpoint listed", lambda: listed in screen())
        terminal.keys("Escape", "C")
        paused = f"paused at nanogpt.py:{_kernel_line()}"
        terminal.wait_for("the pause at the kernel", lambda: paused in screen())
        terminal.keys("e")  # paused at a line: the expression box
        terminal.keys("-l", "!self.c_proj.weight.data.zero_()")
        terminal.keys("Enter")
        terminal.wait_for("the statement to run", lambda: "zero_() → done" in screen())
        terminal.keys("Escape", "q")
        terminal.wait_for("the quit question", lambda: "q again to" in screen())
        terminal.keys("q")
        terminal.wait_for("the attach to end", exit_file.exists)
        assert exit_file.read_text().strip() == "EXIT=0"
        whole = 32 * 32
        assert f"applied in the run: {CHANGED} ({whole:,} of {whole:,} elements" in screen()
        out, log = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, log
    step = int(log.split("applied the client's changes at step ")[1].split(":")[0])
    losses = json.loads(out)
    zero = lambda m: m.transformer.h[0].attn.c_proj.weight.zero_()  # noqa: E731
    assert losses == changed_losses(len(losses), step, zero)


def _raw_attach(path: Path) -> tuple[socket.socket, object]:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(str(path))
    reader = conn.makefile("rb")
    assert "attached" in receive(reader)
    return conn, reader


def _tensor_file(tensors: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def test_changes_that_do_not_fit_the_run_are_refused_and_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "run.sock"
    train = _start(str(path), "1")
    bad = [
        (_tensor_file({"transformer.h.9.mlp.c_fc.weight": torch.zeros(3)}), "none of the model"),
        (_tensor_file({CHANGED: torch.zeros(3, 3)}), "(3, 3) torch.float32 sent, the run's is"),
        (_tensor_file({CHANGED: torch.zeros(32, 32, dtype=torch.float64)}), "torch.float64"),
        (b"import os; os.system('echo hi')", "not a tensor file"),
        (_tensor_file([torch.zeros(1)]), "not a dict of name -> tensor"),
    ]
    try:
        assert f"listening on {path}" in train.stderr.readline()
        conn, reader = _raw_attach(path)
        for blob, why in bad:
            send(conn, {"op": "apply", "bytes": len(blob)}, blob)
            answer = receive(reader)
            assert why in answer.get("error", ""), answer
        send(conn, {"op": "apply", "bytes": 10**12})  # more than the model: not read at all
        assert reader.readline() == b""  # the run lets go of such a client
        conn.close()
        out, log = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, log
    assert log.count("refused the client's changes") == len(bad)
    assert "the client went away (a blob of 1000000000000 bytes" in log
    losses = json.loads(out)
    assert losses == unattached_losses(len(losses))


def test_watch_with_listen_shows_the_watch_figures_in_attach(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.sock"
    train = _start(str(path), "2", "--watch", "--nan-at", "2")
    seen: dict = {}

    async def drive(app) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await _settle(pilot)
            seen["source"] = app.state.training.batch.source
            await pilot.press("q")

    try:
        lines = []
        while f"listening on {path}" not in "".join(lines):
            lines.append(train.stderr.readline())
        for line in train.stderr:  # the watch names the NaN of step 2, and the run goes on
            if "the first non-finite value" in line:
                break
        assert run(["attach", str(path)]) == 0
        printed = capsys.readouterr().out
        app_attach = parse_args(["attach", str(path), "--app"])
        assert run_attach(app_attach, run=lambda app: asyncio.run(drive(app))) == 0
        out, log = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, log
    assert "health: last " in printed and "non-finite weights and gradients" in printed
    watch = next(line for line in printed.splitlines() if line.startswith("watch: "))
    assert watch.startswith("watch: checks every step, at step ")
    finding = "step 2: the first non-finite value is in forward at transformer.h.1.mlp"
    assert finding in watch
    assert f"; watch: {finding}" in seen["source"]  # beside the run's batch in the Train tab


RANKS_SCRIPT = """
import json, sys, torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import gpt_tui
from gpt_tui.models import build_model, make_config

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
model = DistributedDataParallel(build_model(make_config("tiny", "nanogpt"), "cpu", seed=0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(1 + rank)
where = {"tcp": 0} if sys.argv[1] == "tcp" else {}
with gpt_tui.listen(model, optimizer=opt, every=2, **where) as listener:
    after = 0
    for _ in range(5000):
        x = torch.randint(65, (2, 16), generator=gen)
        _, loss = model(x, x.roll(-1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = torch.tensor([listener.clients])  # every rank stops 3 steps after the attach
        dist.all_reduce(done, op=dist.ReduceOp.MAX)
        after += int(done.item()) >= 1
        if after >= 3:
            break
weights = [p.detach().double().sum().item() for p in model.parameters()]
print(json.dumps({"rank": rank, "weights": weights}), flush=True)
# Both ranks past every collective, and DDP's reducer gone, before the group goes: gloo
# aborted one rank's exit ("terminate called without an active exception") once in CI.
del model, opt
dist.barrier()
dist.destroy_process_group()
"""


def _tcp_attach(host: str, port: int, token: str) -> tuple[socket.socket, object]:
    from gpt_tui.listener.wire import client_handshake

    conn = socket.create_connection((host, port))
    reader = conn.makefile("rb")
    client_handshake(conn, reader, token)
    assert "attached" in receive(reader)
    return conn, reader


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["unix", "tcp"])
def test_changes_sent_to_one_rank_reach_every_rank(
    tmp_path: Path, monkeypatch, endpoint: str
) -> None:
    import os
    import re
    import shutil
    import signal
    import tempfile
    import threading

    runtime = Path(tempfile.mkdtemp(prefix="gl-"))  # short: a socket's path is limited
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(300, os.killpg, (proc.pid, signal.SIGKILL))  # a hang's bound
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if sum(seen.count("listening on") for seen in lines) == 2:
                break
        if endpoint == "unix":
            rank1 = re.search(r"listening on (\S+\.rank1\.sock)", "".join(lines))
            assert rank1 is not None, lines
            try:
                conn, reader = _raw_attach(Path(rank1[1]))
            except OSError:
                proc.kill()
                raise AssertionError("".join(lines + proc.stdout.readlines())) from None
        else:  # each rank's token file, beside its pid
            (record,) = (runtime / "gpt-tui" / "runs").glob("*.rank1.tcp")
            data = json.loads(record.read_text())
            conn, reader = _tcp_attach(data["host"], data["port"], data["token"])
        blob = _tensor_file({CHANGED: torch.zeros(32, 32)})
        send(conn, {"op": "apply", "bytes": len(blob)}, blob)
        assert receive(reader)["applied"] == [[CHANGED, 32 * 32, 32 * 32]]
        send(conn, {"op": "detach"})
        assert "detached" in receive(reader)
        conn.close()
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(runtime, ignore_errors=True)
    log = "".join(lines)
    assert "gpt-tui listen: applied the client's changes at step" in log
    assert "rank 0 applied rank 1's client's changes at step" in log
    weights = {}
    for match in re.finditer(r'\{"rank": \d+, "weights": \[[^\]]*\]\}', log):
        data = json.loads(match[0])
        weights[data["rank"]] = data["weights"]
    assert len(weights) == 2 and weights[0] == weights[1]  # the replicas are still one model


def test_watch_listen_arguments_are_checked_up_front(tmp_path: Path) -> None:
    import gpt_tui
    from gpt_tui.errors import GptTuiError

    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cases = [
        ({"listen": True}, "needs optimizer="),
        ({"optimizer": opt, "listen": {"port": 1}}, "allow_remote, every, host, path, tcp"),
        ({"optimizer": opt, "listen": "yes"}, "True, or a dict of gpt_tui.listen's arguments"),
    ]
    for kwargs, message in cases:
        with pytest.raises(GptTuiError, match=message), gpt_tui.watch(model, **kwargs):
            pass
        assert not model._forward_hooks and not opt._optimizer_step_post_hooks  # all removed
    path = tmp_path / "w.sock"
    with gpt_tui.watch(model, optimizer=opt, listen={"path": path}) as handle:
        assert handle.listener is not None and path.exists()
    assert not path.exists()
