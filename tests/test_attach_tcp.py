"""`gpt_tui.listen(..., tcp=PORT)`: loopback only unless asked, a token per listen, proved
by both ends; a wrong or missing token is refused in one line and the run goes on."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from test_listen import ONE_THREAD, SCRIPT, unattached_losses

import gpt_tui
from gpt_tui.cli import run
from gpt_tui.errors import GptTuiError
from gpt_tui.listener.wire import receive, send
from gpt_tui.models import build_model, make_config

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+), token (\S+) \(in (\S+);")


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ONE_THREAD, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]},
    )


def test_tcp_needs_the_token_and_the_run_goes_on(runtime: Path, capsys, monkeypatch) -> None:
    train = _start("tcp", "3")
    try:
        found = LISTENING.search(train.stderr.readline())
        assert found, "the run printed no endpoint"
        port, token, record = int(found[1]), found[2], Path(found[3])
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert json.loads(record.read_text())["token"] == token
        where = f"127.0.0.1:{port}"

        assert run(["attach", where, "--token", "not-the-token"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "the run refused: wrong token" in err

        silent = socket.create_connection(("127.0.0.1", port))  # sends nothing, goes
        silent.makefile("rb").readline()  # the challenge
        silent.close()

        monkeypatch.setenv("GPT_TUI_ATTACH_TOKEN", token)  # a token ps does not show
        elsewhere = runtime / "elsewhere"  # no token file to find: the variable's is used
        elsewhere.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(elsewhere))
        assert run(["attach", where, "--json"]) == 0
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        monkeypatch.delenv("GPT_TUI_ATTACH_TOKEN")
        state = json.loads(capsys.readouterr().out)["state"]
        assert state["step"] >= 1 and state["batch"] == [[2, 16]] * 2
        assert run(["attach", where]) == 0  # a local run: its token file is found
        assert "detached: the run goes on" in capsys.readouterr().out
        assert run(["attach", str(train.pid)]) == 0  # by process id: the same file
        assert f"attached to pid {train.pid}" in capsys.readouterr().out
        out, log = train.communicate(timeout=120)
    finally:
        train.kill()
        train.wait()
    assert train.returncode == 0, log
    assert "wrong token" in log and "the client detached; the run goes on" in log
    assert log.count("the client detached") == 3
    refused = [line for line in log.splitlines() if "refused 127.0.0.1:" in line]
    assert len(refused) == 2, log  # the wrong token, the client that sent none
    losses = json.loads(out)
    assert losses == unattached_losses(len(losses))
    assert not record.exists()


def test_a_server_without_the_token_is_not_trusted(runtime: Path, capsys) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def impostor() -> None:
        conn, _ = server.accept()
        reader = conn.makefile("rb")
        send(conn, {"challenge": "ab" * 32})
        receive(reader)
        send(conn, {"proof": "00" * 32})  # it cannot prove the token
        conn.close()

    thread = threading.Thread(target=impostor)
    thread.start()
    try:
        assert run(["attach", f"127.0.0.1:{port}", "--token", "x" * 20]) == 2
    finally:
        thread.join(30)
        server.close()
    err = capsys.readouterr().err
    assert "did not prove it knows the token: not the run you meant" in err


def test_tcp_is_loopback_unless_remote_is_allowed(runtime: Path, capfd) -> None:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    remote = gpt_tui.listen(model, optimizer=opt, tcp=0, host="0.0.0.0")
    with pytest.raises(GptTuiError, match="pass allow_remote=True if you mean it"), remote:
        pass
    for bad in (70000, True, "7000"):
        with (
            pytest.raises(GptTuiError, match="a port number"),
            gpt_tui.listen(model, optimizer=opt, tcp=bad),
        ):
            pass
    capfd.readouterr()
    with gpt_tui.listen(model, optimizer=opt, tcp=0, host="0.0.0.0", allow_remote=True) as lis:
        assert lis._server.getsockname()[0] == "0.0.0.0"
    err = capfd.readouterr().err
    assert "warning: 0.0.0.0:" in err and "open to other machines" in err
    with gpt_tui.listen(model, optimizer=opt, tcp=0) as lis:
        assert lis._server.getsockname()[0] == "127.0.0.1"
    assert "warning" not in capfd.readouterr().err
    assert not list((runtime / "gpt-tui" / "runs").glob("*.tcp"))  # removed at the end


def test_attach_without_a_token_for_a_foreign_port_is_one_line(runtime: Path, capsys) -> None:
    assert run(["attach", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no token for 127.0.0.1:9: give --token" in err


def test_a_client_waiting_when_the_loop_ends_is_told(tmp_path: Path, capsys) -> None:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = tmp_path / "r.sock"
    result: list[int] = []
    with gpt_tui.listen(model, optimizer=opt, path=path) as listener:
        client = threading.Thread(target=lambda: result.append(run(["attach", str(path)])))
        client.start()
        while not listener._waiting.is_set():  # the run has let it in, no step is coming
            listener._waiting.wait(1)
    client.join(60)
    assert result == [2]
    err = capsys.readouterr().err.strip()
    assert err.endswith("the run refused: the loop ended before its next step boundary")


def test_a_client_silent_in_the_handshake_is_dropped(runtime: Path, monkeypatch, capfd) -> None:
    from gpt_tui.listener import serve

    monkeypatch.setattr(serve, "HANDSHAKE_SECONDS", 0.5)
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with gpt_tui.listen(model, optimizer=opt, tcp=0) as listener:
        port = listener._server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as silent:
            reader = silent.makefile("rb")
            assert b"challenge" in reader.readline()
            assert reader.read() == b""  # it says nothing: the run hangs up at the deadline
        assert listener.clients == 0 and not listener._waiting.is_set()
    assert "refused 127.0.0.1:" in capfd.readouterr().err
