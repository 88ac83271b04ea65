"""Where `gpt-tui attach` connects: a run's Unix socket, or its TCP endpoint and token."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..listener.wire import (
    WireError,
    client_handshake,
    is_loopback,
    read_endpoint_file,
    socket_folder,
)
from .common import UserError

TOKEN_VARIABLE = "GPT_TUI_ATTACH_TOKEN"  # unlike --token, not shown by ps to other users


@dataclass(frozen=True)
class Endpoint:
    path: Path | None = None  # a Unix socket
    host: str = ""
    port: int = 0
    token: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{self.host}:{self.port}"


def _alive(pid: str) -> bool:
    """Whether the process that made an endpoint still runs (a killed run leaves its files)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _tcp_file(path: Path) -> Endpoint:
    record = read_endpoint_file(path)
    if record is None:
        raise UserError(f"{path} is not a gpt-tui endpoint file: is the run still listening?")
    return Endpoint(host=record["host"], port=record["port"], token=record["token"])


def _host_port(target: str) -> tuple[str, int] | None:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or Path(target).exists():
        return None
    return host.strip("[]"), int(port)


def _token_for(host: str, port: int, folder: Path) -> str | None:
    """The token a local run wrote for this port, if it is one of this user's."""
    for path in folder.glob("*.tcp"):
        record = read_endpoint_file(path)
        if record is None or record["port"] != port:
            continue
        if record["host"] == host or (is_loopback(record["host"]) and is_loopback(host)):
            return record["token"]
        if record["host"] in ("0.0.0.0", "::"):
            return record["token"]
    return None


def find_endpoint(target: str | None, rank: int | None, token: str | None) -> Endpoint:
    folder = socket_folder()
    suffix = "" if rank is None else f".rank{rank}"
    if target is None:
        found = sorted(
            p for kind in ("sock", "tcp") for p in folder.glob(f"*{suffix}.{kind}")
            if _alive(p.name.split(".")[0])
        )  # fmt: skip
        if len(found) != 1:
            what = "no run is listening" if not found else f"{len(found)} runs are listening"
            pids = ", ".join(p.stem for p in found)
            ranks = rank is None and any(".rank" in p.name for p in found)
            which = "a rank (gpt-tui attach --rank N)" if ranks else "its process id"
            raise UserError(
                f"{what} in {folder}{f' ({pids})' if pids else ''}: give {which} "
                "(gpt-tui attach PID); a run listens after gpt_tui.listen(model, optimizer=opt)"
            )
        chosen = found[0]
        return Endpoint(path=chosen) if chosen.suffix == ".sock" else _tcp_file(chosen)
    if target.isdigit():
        unix, tcp = folder / f"{target}{suffix}.sock", folder / f"{target}{suffix}.tcp"
        return _tcp_file(tcp) if tcp.exists() and not unix.exists() else Endpoint(path=unix)
    address = _host_port(target)
    if address is None:
        return Endpoint(path=Path(target))
    host, port = address
    token = token or os.environ.get(TOKEN_VARIABLE) or _token_for(host, port, folder)
    if token is None:
        raise UserError(
            f"no token for {host}:{port}: give --token TOKEN or set {TOKEN_VARIABLE} (the "
            "run printed it when it began to listen)"
        )
    return Endpoint(host=host, port=port, token=token)


def connect(endpoint: Endpoint, wait: float) -> tuple[socket.socket, IO[bytes]]:
    """A connection that the run has let in (TCP: both ends proved the token)."""
    if endpoint.path is not None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(wait)
        try:
            conn.connect(str(endpoint.path))
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            raise UserError(f"no run listens on {endpoint}: is it still running?") from None
        except PermissionError:
            conn.close()
            raise UserError(f"{endpoint} belongs to another user: attach as that user") from None
        return conn, conn.makefile("rb")
    try:
        conn = socket.create_connection((endpoint.host, endpoint.port), timeout=wait)
    except OSError as err:
        raise UserError(f"no run listens on {endpoint}: {err.strerror or err}") from None
    reader = conn.makefile("rb")
    try:
        client_handshake(conn, reader, endpoint.token or "")
    except (WireError, OSError) as err:
        reader.close()
        conn.close()
        raise UserError(f"{endpoint}: {err}") from None
    return conn, reader
