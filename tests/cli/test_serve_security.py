"""`gpt-tui serve` refuses whoever should not drive the app, caps and ends its app processes.

A real `gpt-tui serve` runs in a subprocess on 127.0.0.1; clients are aiohttp's. A refused
client must leave serve with no child process: the app (which can run code) never started,
so nothing typed could reach it. Waits are bounded polls or reads with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from gpt_tui.cli import run

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp comes with textual-serve")
pytest.importorskip("textual_serve", reason="textual-serve is not installed")

REPO = Path(__file__).resolve().parents[2]
ESCAPES = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")
READY = "press r to run the forward pass"  # the app has opened the model
DEADLINE = 120.0  # seconds for anything that starts an app process on a busy machine
TOKEN = "a-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    url: str  # as printed, with ?token=
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def apps(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_for_apps(self, count: int) -> list[psutil.Process]:
        end = time.monotonic() + DEADLINE
        while len(apps := self.apps()) != count:
            assert time.monotonic() < end, f"expected {count} app processes, have {apps}"
            time.sleep(0.05)  # a bounded poll, not synchronisation by sleeping
        return apps


def read_line_with(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """serve's stdout up to the line holding `needle`, within `timeout` seconds."""
    assert proc.stdout is not None
    seen = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], end - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return line
    pytest.fail(f"gpt-tui serve printed no {needle!r}:\n{seen}")


def start_serve(*extra: str) -> Served:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = ["-m", "gpt_tui", "serve", "--config", "tiny", "--device", "cpu", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, *argv, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        bufsize=1,
    )
    line = read_line_with(proc, "Serving", DEADLINE)
    url = line.split()[-1]
    token = url.partition("?token=")[2]
    return Served(proc, port, url, token)


def stop_serve(served: Served) -> None:
    """End serve; every app process it started must be gone too."""
    apps = served.apps()
    served.proc.terminate()
    try:
        served.proc.wait(timeout=60)
    finally:
        served.proc.kill()
        served.proc.wait()
        _, alive = psutil.wait_procs(apps, timeout=30)
        assert not alive, f"app processes outlived serve: {alive}"
    assert served.proc.stdout is not None
    assert served.token not in served.proc.stdout.read()  # the access log hides it


@pytest.fixture(scope="module")
def serve_default() -> Iterator[Served]:
    served = start_serve()
    try:
        yield served
    finally:
        stop_serve(served)


@pytest.fixture
def serve_one() -> Iterator[Served]:
    served = start_serve("--max-clients", "1", "--token", TOKEN)
    try:
        yield served
    finally:
        stop_serve(served)


def screen(frames: list[bytes]) -> str:
    return ESCAPES.sub("", b"".join(frames).decode("utf-8", "replace"))


async def read_until(ws, frames: list[bytes], needle: str, start: int = 0) -> None:
    """Collect the app's output frames until `needle` shows after frame `start`."""

    async def collect() -> None:
        while needle not in screen(frames[start:]):
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                frames.append(message.data)
            elif message.type != aiohttp.WSMsgType.TEXT:
                pytest.fail(f"the connection ended before {needle!r}: {screen(frames)[-300:]}")

    await asyncio.wait_for(collect(), DEADLINE)


async def wait_closed(ws) -> None:
    async def drain() -> None:
        closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        while (await ws.receive()).type not in closing:
            pass

    await asyncio.wait_for(drain(), DEADLINE)


# --- refused before anything starts -----------------------------------------------------------


def test_the_printed_url_carries_a_fresh_random_token(serve_default: Served) -> None:
    assert serve_default.url == f"{serve_default.base}/?token={serve_default.token}"
    assert len(serve_default.token) >= 32


@pytest.mark.parametrize(
    "case",
    [
        "foreign origin",
        "wrong host",
        "no token",
        "wrong token",
        "wrong token in the path",
        "token in a foreign page",
    ],
)
async def test_a_refused_websocket_starts_no_app(serve_default: Served, case: str) -> None:
    own = serve_default.base
    token = serve_default.token
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    path, query, headers = "/ws", {"token": token}, {"Origin": own}
    if case == "foreign origin":
        headers["Origin"] = "http://evil.example"
    elif case == "wrong host":
        headers = {"Host": f"evil.example:{serve_default.port}", "Origin": "http://evil.example"}
    elif case == "no token":
        query = {}
    elif case == "wrong token":
        query = {"token": wrong}
    elif case == "wrong token in the path":
        path, query = f"/ws/{wrong}", {}
    else:  # the right token, but the browser says the page is someone else's
        headers = {"Origin": "http://127.0.0.1.evil.example"}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(own + path, params=query, headers=headers) as ws:
                await ws.send_json(["stdin", "r"])  # never reached: the handshake fails
        assert refused.value.status == 403
    assert serve_default.apps() == []


@pytest.mark.parametrize("case", ["wrong host", "no token", "wrong token"])
async def test_the_page_needs_the_token_and_the_servers_own_host(
    serve_default: Served, case: str
) -> None:
    token = serve_default.token
    query: dict[str, str] = {"token": token}
    headers: dict[str, str] = {}
    if case == "wrong host":  # DNS rebinding: a foreign name that resolves to 127.0.0.1
        headers["Host"] = f"evil.example:{serve_default.port}"
    elif case == "no token":
        query = {}
    else:
        query = {"token": "x" * len(token)}
    page = f"{serve_default.base}/"
    async with (
        aiohttp.ClientSession() as session,
        session.get(page, params=query, headers=headers) as r,
    ):
        assert r.status == 403
        assert "gpt-tui" in await r.text()
    assert serve_default.apps() == []


async def page_websocket_url(session, served: Served) -> str:
    """What the page's script connects to (it appends ?width=...&height=...)."""
    async with session.get(served.url) as response:
        assert response.status == 200
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in response.headers  # a cookie would reach every local port
        page = await response.text()
    found = re.search(r'data-session-websocket-url="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def test_the_pages_own_websocket_url_carries_the_token(serve_default: Served) -> None:
    async with aiohttp.ClientSession() as session:
        url = await page_websocket_url(session, serve_default)
        assert url == f"ws://127.0.0.1:{serve_default.port}/ws/{serve_default.token}"
        async with session.get(f"{serve_default.base}/static/js/textual.js") as script:
            assert script.status == 200  # the same for everyone: no token needed
    assert serve_default.apps() == []


# --- the apps: driven with the token, capped, and ended ---------------------------------------


@pytest.mark.slow
async def test_the_pages_websocket_drives_the_app_a_second_tab_is_turned_away(
    serve_one: Served,
) -> None:
    async with aiohttp.ClientSession() as session:
        ws_url = await page_websocket_url(session, serve_one) + "?width=160&height=50"
        async with session.ws_connect(ws_url, headers={"Origin": serve_one.base}) as ws:
            frames: list[bytes] = []
            await read_until(ws, frames, READY)
            mark = len(frames)
            await ws.send_json(["stdin", "r"])
            await read_until(ws, frames, "zero%", mark)  # the stats table: the key arrived
            (app,) = serve_one.wait_for_apps(1)

            async with session.ws_connect(ws_url, headers={"Origin": serve_one.base}) as second:
                said = await second.receive()
                assert "--max-clients" in said.data.decode()
                await wait_closed(second)
                assert second.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
            assert serve_one.apps() == [app]

        _, alive = psutil.wait_procs([app], timeout=DEADLINE)  # the tab closed
        assert not alive


DROPPING_CLIENT = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(sys.argv[1]) as ws:
            seen = b""
            while b"forward pass" not in seen:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.BINARY:
                    seen = seen[-2000:] + message.data
                elif message.type != aiohttp.WSMsgType.TEXT:
                    sys.exit("closed early")
            print("up", flush=True)
            await asyncio.Event().wait()  # until killed: the connection drops, no close frame
asyncio.run(main())
"""


@pytest.mark.slow
def test_a_dropped_connection_ends_its_app(serve_one: Served) -> None:
    ws_url = f"ws://127.0.0.1:{serve_one.port}/ws?token={TOKEN}&width=160&height=50"
    client = subprocess.Popen(
        [sys.executable, "-c", DROPPING_CLIENT, ws_url], stdout=subprocess.PIPE, text=True
    )
    try:
        read_line_with(client, "up", DEADLINE)
        (app,) = serve_one.wait_for_apps(1)
        client.kill()  # a browser that crashed or lost its network
        client.wait(timeout=30)
        _, alive = psutil.wait_procs([app], timeout=DEADLINE)
        assert not alive, "the app outlived its dropped connection"
        assert serve_one.proc.poll() is None  # serve itself carries on
    finally:
        client.kill()
        client.wait()


@pytest.mark.slow
async def test_an_idle_connection_is_closed_and_its_app_ends() -> None:
    served = start_serve("--idle-timeout", "3", "--token", TOKEN)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{served.base}/ws?token={TOKEN}&width=160&height=50"
            async with session.ws_connect(url) as ws:
                (app,) = served.wait_for_apps(1)  # it lives at least the 3 s of idleness
                await read_until(ws, [], "--idle-timeout")  # nothing typed: it times out
                await wait_closed(ws)
        _, alive = psutil.wait_procs([app], timeout=DEADLINE)
        assert not alive
    finally:
        stop_serve(served)


@pytest.mark.slow
async def test_serve_ending_ends_every_app_and_tells_the_tab() -> None:
    served = start_serve("--token", TOKEN)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{served.base}/ws?token={TOKEN}&width=160&height=50"
            async with session.ws_connect(url) as ws:
                await read_until(ws, [], READY)
                (app,) = served.wait_for_apps(1)
                stop_serve(served)  # SIGTERM, as Ctrl+C or a service manager would
                assert served.proc.returncode == 0
                assert not app.is_running()
                await wait_closed(ws)
    finally:
        stop_serve(served)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_an_app_dies_with_a_killed_serve() -> None:
    served = start_serve("--token", TOKEN)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{served.base}/ws?token={TOKEN}&width=160&height=50"
            async with session.ws_connect(url) as ws:
                await read_until(ws, [], READY)
                (app,) = served.wait_for_apps(1)
                served.proc.send_signal(signal.SIGKILL)  # no chance to clean up
                _, alive = psutil.wait_procs([app], timeout=DEADLINE)
                assert not alive, "the app outlived a killed serve"
    finally:
        stop_serve(served)


# --- mistakes at launch: one line, exit 2, before any banner ----------------------------------


def test_a_port_in_use_is_one_line_before_the_banner(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run(["serve", "--config", "tiny", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == f"gpt-tui: error: port {port} is already in use on 127.0.0.1: pick another with --port\n"
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--host", "no-such-host.invalid", "--allow-remote"], "--host no-such-host.invalid"),
        (["--host", "192.0.2.1", "--allow-remote"], "not an address of this machine"),
        (["--token", "short"], "--token needs at least 16 characters"),
        (["--token", "has spaces in it, 16+"], "--token needs at least 16 characters"),
        (["--token", ""], "--token needs at least 16 characters"),
        (["--host", "0.0.0.0"], "--allow-remote"),
    ],
)
def test_launch_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert run(["serve", "--config", "tiny", "--port", str(free_port()), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and needle in err, err


@pytest.mark.parametrize(
    "flag,value", [("--max-clients", "0"), ("--max-clients", "x"), ("--idle-timeout", "-1")]
)
def test_limits_are_checked(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    assert run(["serve", "--config", "tiny", flag, value]) == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(
    "bound,header,ok",
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "localhost:8000", True),
        ("127.0.0.1", "[::1]:8000", True),
        ("127.0.0.1", "LOCALHOST:8000", True),
        ("127.0.0.1", "127.0.0.1:8001", False),  # another port: another origin
        ("127.0.0.1", "127.0.0.1", False),  # no port: 80
        ("127.0.0.1", "localhost.evil.example:8000", False),
        ("127.0.0.1", "[::1]x:8000", False),
        ("::1", "[::1]:8000", True),
        ("192.0.2.7", "192.0.2.7:8000", True),
        ("192.0.2.7", "localhost:8000", False),  # bound elsewhere: loopback names are not it
    ],
)
def test_the_host_header_must_name_the_bound_address(bound: str, header: str, ok: bool) -> None:
    from gpt_tui.cli.serve_guard import Guard, allowed_names

    guard = Guard(token=TOKEN, port=8000, names=frozenset(allowed_names(bound)))
    assert guard.host_ok(header) is ok
