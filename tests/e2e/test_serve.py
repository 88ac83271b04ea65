"""`gpt-tui serve` in a real headless Chromium: the page, opened with the token URL serve
prints, shows the module tree, a key press runs the forward pass, and the stats table
appears. Without the token the page is refused and no app starts.

The terminal in the page draws on a canvas, so the test reads what the app sends down the
websocket (the app's terminal output) with the escape sequences taken out. It skips, with
the reason, where Chromium, playwright or textual-serve is missing (.ci/run installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_tui.cli import run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ESCAPES = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    pytest.importorskip("textual_serve", reason="textual-serve is not installed")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = ["-m", "gpt_tui", "serve", "--config", "tiny", "--device", "cpu", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    seen = []
    try:
        for line in proc.stdout:  # "Serving gpt-tui on http://127.0.0.1:PORT/?token=..."
            seen.append(line)
            if "Serving" in line:
                break
        else:
            pytest.fail("gpt-tui serve exited before serving:\n" + "".join(seen))
        url = line.split()[-1]
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def screen_text(frames: list) -> str:
    raw = "".join(f.decode("utf-8", "replace") if isinstance(f, bytes) else f for f in frames)
    return ESCAPES.sub("", raw)


def test_the_app_in_a_browser_runs_the_forward_pass_on_a_key(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian's chromium package; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            frames: list = []
            sockets: list = []

            def on_socket(ws) -> None:  # listen from the first frame on
                sockets.append(ws)
                ws.on("framereceived", lambda payload: frames.append(payload))

            page.on("websocket", on_socket)
            with page.expect_websocket(timeout=TIMEOUT_MS):
                page.goto(server)
            ws = sockets[0]

            def wait_for(needle: str, start: int = 0) -> None:
                if needle not in screen_text(frames[start:]):
                    ws.wait_for_event(
                        "framereceived",
                        predicate=lambda _: needle in screen_text(frames[start:]),
                        timeout=TIMEOUT_MS,
                    )

            wait_for("press r to run the forward pass")  # the model is open
            shown = screen_text(frames)
            assert "lm_head" in shown and "transformer" in shown  # the module tree
            assert "zero%" not in shown  # no stats table yet
            mark = len(frames)
            page.locator(".xterm-helper-textarea").focus()
            page.keyboard.press("r")
            wait_for("zero%", mark)  # the stats table's header, drawn after the key
            assert "mlp" in screen_text(frames[mark:])  # a row of the table
        finally:
            browser.close()


def test_the_page_without_the_token_is_refused(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian's chromium package; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            sockets: list = []
            page.on("websocket", lambda ws: sockets.append(ws))
            response = page.goto(server.partition("?")[0])
            assert response is not None and response.status == 403
            assert "token" in page.content()
            assert sockets == []  # the refused page has no script that could open one
        finally:
            browser.close()


def test_a_non_local_host_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serve", "--config", "tiny", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 is not this machine's loopback" in err and "--allow-remote" in err
    assert err.count("\n") == 1
