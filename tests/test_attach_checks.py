"""`gpt-tui attach` says every mistake it can find without the run before it connects (a
connection pauses the run): a socket listens where the run's would, and after each refusal
nothing has connected to it. Under torchrun, a rank that is not there is named as such."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt_tui.cli import run
from gpt_tui.cli.common import UserError

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
NO_TERMINAL = {k: v for k, v in os.environ.items() if k != "TEXTUAL_DRIVER"}


@pytest.fixture
def runtime(monkeypatch) -> Iterator[Path]:
    """A runtime folder of the test's own (short: a socket's path is limited)."""
    folder = Path(tempfile.mkdtemp(prefix="gc-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    """A socket that listens like a run's and never answers: a client that connected to
    it would wait in its backlog, where accept() finds it."""
    path = tmp_path / "run.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.setblocking(False)
    yield path, server
    server.close()


def nobody_connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            ["--app", "--meta", "/nonexistent/meta.pkl"],
            "--meta /nonexistent/meta.pkl: no such file",
        ),
        (["--app", "--tokenizer", "/nonexistent"], "--tokenizer /nonexistent: no such file or"),
        (["--app", "--meta", "README"], "--meta: README is neither JSON, a pickle nor"),
        (["--app", "--meta", "m.pkl", "--tokenizer", "t"], "--meta and --tokenizer both name"),
        (["--app", "--device", "cuda:99"], "--device cuda:99: "),  # no GPU, or not 100
        (["--app", "--device", "tpu"], "unknown --device 'tpu'"),
        (["--meta", "m.pkl"], "--meta says how the app opens the run's copy: give --app too"),
        (["--device", "cpu"], "--device says how the app opens the run's copy: give --app too"),
        (["--allow-changes"], "--allow-changes sends what you change in the app: give --app"),
        (["--wait", "0"], "--wait 0: give a number of seconds above 0"),
        (["--rank", "1"], "--rank chooses among the runs listening in"),
        (["--token", "abc"], "--token is for a HOST:PORT endpoint"),
    ],
)
def test_a_mistake_is_said_before_the_run_is_paused(
    listening, given: list[str], said: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    path, server = listening
    (tmp_path / "README").write_text("not a vocabulary\n")
    monkeypatch.chdir(tmp_path)
    assert run(["attach", str(path), *given]) == 2
    assert said in one_line(capsys.readouterr().err)
    assert nobody_connected(server)


def test_a_good_meta_passes_the_checks_and_attach_connects(
    listening, tmp_path: Path, capsys
) -> None:
    """The checks refuse only mistakes: a real meta.pkl gets as far as the run."""
    import pickle

    path, server = listening
    meta = tmp_path / "meta.pkl"
    chars = sorted(set("hello world"))
    vocabulary = {"vocab_size": len(chars), "itos": dict(enumerate(chars))}
    meta.write_bytes(pickle.dumps({**vocabulary, "stoi": {c: i for i, c in enumerate(chars)}}))
    server.setblocking(True)
    refuse = threading.Thread(target=lambda: _refuse_one(server))
    refuse.start()
    # run_attach's own runner: the terminal check belongs to the command's default one
    from gpt_tui.cli.attach_cmd import run_attach
    from gpt_tui.cli.parser import parse_args

    args = parse_args(["attach", str(path), "--app", "--meta", str(meta)])
    with pytest.raises(UserError, match="the run refused: busy"):
        run_attach(args, run=lambda app: None)
    refuse.join()


def _refuse_one(server: socket.socket) -> None:
    conn, _ = server.accept()
    conn.sendall(b'{"error": "busy"}\n')
    conn.close()


def _gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=NO_TERMINAL,
    )


def test_attach_app_without_a_terminal_is_one_line_and_the_run_goes_on(listening) -> None:
    path, server = listening
    done = _gpt_tui("attach", str(path), "--app")
    assert done.returncode == 2 and done.stdout == ""
    line = one_line(done.stderr)
    assert "gpt-tui attach --app needs an interactive terminal" in line
    assert "gpt-tui attach --do forward --do train-step" in line
    assert nobody_connected(server)


def test_the_app_without_a_terminal_is_one_line() -> None:
    done = _gpt_tui("--config", "tiny")
    assert done.returncode == 2 and done.stdout == ""
    line = one_line(done.stderr)
    assert "gpt-tui (the inspector) needs an interactive terminal" in line
    assert "gpt-tui summary, trace or step" in line and "gpt-tui serve" in line


def test_the_app_refuses_a_missing_vocabulary_before_its_screen(capsys) -> None:
    for flag, said in (
        ("--tokenizer", "no such file or folder"),
        ("--meta", "no such file (give a meta.pkl)"),
    ):
        assert run(["--config", "tiny", flag, "/nonexistent/vocab"]) == 2
        assert one_line(capsys.readouterr().err).endswith(f"{flag} /nonexistent/vocab: {said}")


def _listen(folder: Path, name: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(folder / name))
    server.listen(4)
    server.setblocking(False)
    return server


def test_a_rank_of_a_run_not_under_torchrun_names_that_run(runtime: Path, capsys) -> None:
    from gpt_tui.listener import socket_folder

    pid = os.getpid()  # a live process: its endpoint counts as listening
    server = _listen(socket_folder(), f"{pid}.sock")
    try:
        assert run(["attach", "--rank", "3"]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"(pid {pid}) is not under torchrun and has no rank 3" in line
        assert f"attach without --rank (gpt-tui attach {pid})" in line
        assert "no run is listening" not in line
        assert run(["attach", str(pid), "--rank", "3"]) == 2
        assert f"(pid {pid}) is not under torchrun" in one_line(capsys.readouterr().err)
        assert nobody_connected(server)
    finally:
        server.close()


def test_a_rank_that_is_not_there_names_the_ranks_that_are(runtime: Path, capsys) -> None:
    from gpt_tui.listener import socket_folder

    pid, other = os.getpid(), os.getppid()  # two live processes: a torchrun rank's, a run's
    servers = [_listen(socket_folder(), f"{pid}.rank{r}.sock") for r in (0, 1)]
    servers.append(_listen(socket_folder(), f"{other}.sock"))
    try:
        assert run(["attach", "--rank", "2"]) == 2
        line = one_line(capsys.readouterr().err)
        assert "no rank 2 is listening" in line
        assert "the torchrun ranks there are 0, 1 (gpt-tui attach --rank 0)" in line
        assert line.endswith(f"; not under torchrun: pid {other}")
        assert all(map(nobody_connected, servers))
    finally:
        for server in servers:
            server.close()


def test_a_rank_process_is_found_by_its_pid_alone(runtime: Path, capsys) -> None:
    from gpt_tui.listener import socket_folder

    pid = os.getpid()
    server = _listen(socket_folder(), f"{pid}.rank1.sock")
    try:
        assert run(["attach", str(pid), "--rank", "0"]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"process {pid} listens as rank 1, not rank 0: gpt-tui attach {pid}" in line
        assert nobody_connected(server)
        server.setblocking(True)
        refuse = threading.Thread(target=lambda: _refuse_one(server))
        refuse.start()
        assert run(["attach", str(pid)]) == 2  # it reached this rank's socket
        assert "the run refused: busy" in one_line(capsys.readouterr().err)
        refuse.join()
    finally:
        server.close()
