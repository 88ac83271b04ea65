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


def _listening(folder: Path) -> list[Path]:
    """The endpoints of live runs in `folder`: `<pid>.sock` / `<pid>.tcp`, and under
    torchrun `<pid>.rank<N>.sock` / `.tcp`."""
    found = [p for kind in ("sock", "tcp") for p in folder.glob(f"*.{kind}")]
    return sorted(p for p in found if _alive(p.name.split(".")[0]))


def _rank(path: Path) -> int | None:
    """The rank in an endpoint's name, None for a run that is not under torchrun."""
    middle = path.name.split(".")[1:-1]
    if len(middle) == 1 and middle[0].startswith("rank") and middle[0][4:].isdigit():
        return int(middle[0][4:])
    return None


def _no_such_rank(rank: int, endpoints: list[Path], where: str) -> UserError:
    """Runs listen, but none as rank `rank`: say what does listen and how to attach to it."""
    plain = list(dict.fromkeys(p.name.split(".")[0] for p in endpoints if _rank(p) is None))
    ranks = sorted({r for r in map(_rank, endpoints) if r is not None})
    if plain and not ranks:
        runs = (
            f"run listening {where} (pid {plain[0]}) is not under torchrun and has"
            if len(plain) == 1
            else f"runs listening {where} (pids {', '.join(plain)}) are not under torchrun and have"
        )
        return UserError(
            f"the {runs} no rank {rank}: attach without --rank (gpt-tui attach {plain[0]})"
        )
    also = f"; not under torchrun: pid {', '.join(plain)}" if plain else ""
    return UserError(
        f"no rank {rank} is listening {where}: the torchrun ranks there are "
        f"{', '.join(map(str, ranks))} (gpt-tui attach --rank {ranks[0]}){also}"
    )


def _endpoint(path: Path) -> Endpoint:
    return Endpoint(path=path) if path.suffix == ".sock" else _tcp_file(path)


def _by_pid(pid: str, rank: int | None, folder: Path) -> Endpoint:
    """A run's endpoint by its process id: a torchrun rank's pid names one rank."""
    own = sorted(p for kind in ("sock", "tcp") for p in folder.glob(f"{pid}.*{kind}"))
    if rank is None:
        mine = [p for p in own if _rank(p) is None] or own
    else:
        mine = [p for p in own if _rank(p) == rank]
        others = sorted({r for r in map(_rank, own) if r is not None})
        if others and not mine:
            raise UserError(
                f"process {pid} listens as rank {others[0]}, not rank {rank}: "
                f"gpt-tui attach {pid} (or gpt-tui attach --rank {rank} for rank {rank}'s own)"
            )
        if own and not mine:
            raise _no_such_rank(rank, own, f"in {folder}")
    if not mine:  # not listening (any more): connect says so
        return Endpoint(path=folder / f"{pid}{'' if rank is None else f'.rank{rank}'}.sock")
    return _endpoint(next((p for p in mine if p.suffix == ".sock"), mine[0]))


def find_endpoint(target: str | None, rank: int | None, token: str | None) -> Endpoint:
    folder = socket_folder()
    if token is not None and (target is None or _host_port(target) is None):
        raise UserError(
            "--token is for a HOST:PORT endpoint (a local run's token is read from its file, "
            "a Unix socket needs none): give HOST:PORT, or drop --token"
        )
    if target is None:
        endpoints = _listening(folder)
        found = [p for p in endpoints if rank is None or _rank(p) == rank]
        if endpoints and not found and rank is not None:
            raise _no_such_rank(rank, endpoints, f"in {folder}")
        if len(found) != 1:
            what = "no run is listening" if not found else f"{len(found)} runs are listening"
            pids = ", ".join(p.stem for p in found)
            ranks = rank is None and any(_rank(p) is not None for p in found)
            which = "a rank (gpt-tui attach --rank N)" if ranks else "its process id"
            raise UserError(
                f"{what} in {folder}{f' ({pids})' if pids else ''}: give {which} "
                "(gpt-tui attach PID); a run listens after gpt_tui.listen(model, optimizer=opt)"
            )
        return _endpoint(found[0])
    if target.isdigit():
        return _by_pid(target, rank, folder)
    if rank is not None:
        raise UserError(
            f"--rank chooses among the runs listening in {folder}; {target} names one "
            "endpoint already: drop --rank"
        )
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
