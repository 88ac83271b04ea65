"""textual-serve's server with what it lacks for a code-running app: the guard
(serve_guard), a cap on app processes, an idle timeout, and app processes that end with
their connection and with serve.

Each app runs in its own session (process group), so ending it kills the group. A spinning
app was seen to ignore SIGTERM, so an app gets a quit message, a short grace, then SIGKILL.
serve_child arms a parent-death signal in the app, for when serve itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
from asyncio.subprocess import PIPE, Process
from collections.abc import Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import WSCloseCode, WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from .common import UserError
from .serve_guard import Guard

QUIT_GRACE = 5.0  # seconds an app has to leave after its quit message (it takes ~3) before SIGKILL
RELAY_GRACE = 5.0  # seconds the output relay has to drain once its app has gone
USER_INPUT = {"stdin", "resize", "focus", "blur"}  # what counts as activity (not "ping")
TOKEN_IN_URL = re.compile(r"(token=|/ws/)[^&\s\"/?]+")


class HideTokens(logging.Filter):
    """The access log shows request paths; the token in them stays on the banner only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = TOKEN_IN_URL.sub(r"\1...", record.msg)
        return True


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one line saying why not (before anything is printed)."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror as err:
        raise UserError(f"--host {host}: not an address or name of this machine "
                        f"({err.strerror})") from None  # fmt: skip
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use on {host}: pick another with --port"
        elif err.errno == errno.EADDRNOTAVAIL:
            why = f"--host {host} is not an address of this machine"
        elif err.errno == errno.EACCES:
            why = f"port {port} needs privileges to listen on: use a port above 1023"
        else:
            why = f"cannot listen on {where}: {err.strerror}"
        raise UserError(why) from None
    return sock


class ServedApp(AppService):
    """One browser connection's app process: started in its own session, always ended."""

    def __init__(self, argv: list[str], **kwargs: object) -> None:
        super().__init__(" ".join(argv), **kwargs)  # type: ignore[arg-type]
        self.argv = argv

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        env = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env, start_new_session=True
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def run(self) -> None:
        try:
            await super().run()
        finally:  # an app that ends on its own (q, a crash) ends its connection too
            await self.remote_close()

    def kill(self) -> None:
        """SIGKILL the app's process group (itself and anything it started)."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Ask the app to quit, wait a moment, then kill its group; bounded throughout."""
        process, task = self._process, self._task
        if process is None:
            return
        self._task = None
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        if process.returncode is None:
            await self.send_meta({"type": "quit"})
            try:
                await asyncio.wait_for(process.wait(), QUIT_GRACE)
            except asyncio.TimeoutError:
                self.kill()
                await process.wait()
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, RELAY_GRACE)


class GuardedServer(Server):
    """textual-serve's Server, guarded, with a cap on apps and an idle timeout."""

    def __init__(
        self,
        argv: list[str],
        *,
        guard: Guard,
        public_url: str,
        max_clients: int,
        idle_timeout: float | None,
        banner: Callable[[], None],
    ) -> None:
        super().__init__(" ".join(argv), title="gpt-tui", public_url=public_url)
        self.argv = argv
        self.guard = guard
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.banner = banner
        self.apps: set[ServedApp] = set()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self.guard.middleware)
        # the page's WebSocket: textual.js appends "?width=...", so the token goes in the path
        app.router.add_get("/ws/{token}", self.handle_websocket)
        return app

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        context = await Server.handle_index.__wrapped__(self, request)  # textual-serve's own
        context["app_websocket_url"] += f"/{self.guard.token}"
        return context

    async def on_startup(self, app: web.Application) -> None:
        self.banner()

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(served.stop() for served in list(self.apps)))

    def serve_on(self, sock: socket.socket) -> None:
        """Serve on a socket bound already (so a busy port was reported before the banner);
        whatever happens, no app process outlives this call."""
        self.initialize_logging()
        logging.getLogger("aiohttp.access").addFilter(HideTokens())
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_exit)
        try:
            web.run_app(self._make_app(), sock=sock, handle_signals=False, loop=loop,
                        print=lambda *_: None)  # fmt: skip
        finally:
            for served in list(self.apps):
                served.kill()

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=15)
        if len(self.apps) >= self.max_clients:
            await websocket.prepare(request)
            await websocket.send_bytes(
                f"gpt-tui serve: {self.max_clients} app(s) are open already (--max-clients); "
                "close one and reload this page\r\n".encode()
            )
            await websocket.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"max clients")
            return websocket
        served = ServedApp(
            self.argv,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            download_manager=self.download_manager,
            debug=self.debug,
        )
        self.apps.add(served)  # before any await: the cap holds under concurrent requests
        try:
            await websocket.prepare(request)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await served.start(width, height)
            with contextlib.suppress(ConnectionResetError):  # the browser left mid-send
                await self.relay(websocket, served)
        finally:
            try:
                await served.stop()
            finally:  # a stop cut short (serve shutting down) still ends the app
                served.kill()
                self.apps.discard(served)
        return websocket

    async def relay(self, websocket: web.WebSocketResponse, served: ServedApp) -> None:
        """The browser's messages to the app, until the connection ends or sits idle."""
        loop = asyncio.get_running_loop()
        deadline = None if self.idle_timeout is None else loop.time() + self.idle_timeout
        while True:
            wait = None if deadline is None else max(deadline - loop.time(), 0.001)
            try:
                message = await websocket.receive(timeout=wait)
            except asyncio.TimeoutError:
                await websocket.send_bytes(
                    f"\r\ngpt-tui serve: closed after {self.idle_timeout:g} s without input "
                    "(--idle-timeout); reload the page to start again\r\n".encode()
                )
                await websocket.close(code=WSCloseCode.GOING_AWAY, message=b"idle")
                return
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                WSMsgType.ERROR):  # fmt: skip
                return
            if message.type != WSMsgType.TEXT:
                continue
            try:
                kind, data = json.loads(message.data)
            except (ValueError, TypeError):
                continue
            if kind in USER_INPUT and deadline is not None:
                deadline = loop.time() + self.idle_timeout  # type: ignore[operator]
            if kind == "stdin" and isinstance(data, str):
                await served.send_bytes(data.encode("utf-8"))
            elif kind == "resize" and isinstance(data, dict):
                await served.set_terminal_size(to_int(str(data.get("width")), 80),
                                               to_int(str(data.get("height")), 24))  # fmt: skip
            elif kind == "ping":
                await websocket.send_json(["pong", data])
            elif kind == "blur":
                await served.blur()
            elif kind == "focus":
                await served.focus()
