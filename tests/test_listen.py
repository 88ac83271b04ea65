"""`gpt_tui.listen` + `gpt-tui attach`: a real training loop in a subprocess, attached to
at a step boundary; the run's losses are those of an unattached run."""

from __future__ import annotations

import json
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
