"""`gpt_tui.listen(model, optimizer=opt)`: a running training loop that `gpt-tui attach`
can look into.

import gpt_tui

with gpt_tui.listen(model, optimizer=optimizer):
    for step in range(max_iters):
        ...  # the loop, unchanged

By default it opens a Unix socket (mode 0600, in a folder only its user can enter: the
runtime folder, `$XDG_RUNTIME_DIR/gpt-tui/runs/<pid>.sock`, else `/tmp/gpt-tui-<uid>/runs/`);
`tcp=PORT` opens a TCP endpoint on 127.0.0.1 instead, behind a per-listen token (see
wire.py), and another interface only with `allow_remote=True`. While no one is attached
it costs a flag read per optimizer step. A client connects; at the next step boundary
(the end of `optimizer.step()`) the loop pauses and answers its requests in the training
thread (answers.py), then goes on when the client detaches or goes away. Requests read the
run and never change it, except `apply` (`gpt-tui attach --allow-changes`): tensors the
client changed, checked against the live model and copied into it at that boundary.
A lost client, a second client (refused: "busy"), a client of another user or without the
token (refused): one line in the run's log each, and the run goes on.

Under torchrun each rank listens on `<pid>.rank<N>.sock` (TCP: PORT + N); every `every`
steps the ranks all-reduce one integer ("a client waits") on a gloo group of listen's own,
and when it is up every rank pauses at that boundary: the attached one serves its client,
the others wait, then all apply the changes the client sent, so the replicas stay equal and
the run's collectives stay in step.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..engine.training.watch_arguments import check_arguments
from ..errors import GptTuiError, with_only
from .serve import Listener, log
from .wire import (
    bind_tcp,
    bind_unix,
    is_loopback,
    new_token,
    peer_uid,
    socket_folder,
    write_endpoint_file,
)


def _rank_group() -> tuple[Any, int | None]:
    """Under torchrun, a gloo group of listen's own (a CPU flag whatever the run's backend,
    and a long timeout: the other ranks wait while a user looks) and this rank."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None, None
    try:
        group = dist.new_group(backend="gloo", timeout=timedelta(days=7))
    except (RuntimeError, ValueError) as err:
        raise GptTuiError(f"listen under torchrun needs a gloo process group: {err}") from None
    return group, dist.get_rank()


def _check_endpoint(tcp: Any, host: Any, allow_remote: Any, path: Any) -> None:
    if tcp is None:
        return
    if isinstance(tcp, bool) or not isinstance(tcp, int) or not 0 <= tcp <= 65535:
        raise GptTuiError(f"tcp={tcp!r}: a port number, 0 to 65535 (0: one the system picks)")
    if path is not None:
        raise GptTuiError("give path= (a Unix socket) or tcp= (a TCP port), not both")
    if not isinstance(host, str) or not host:
        raise GptTuiError(f"host={host!r}: an address to listen on, e.g. '127.0.0.1'")
    if not is_loopback(host) and allow_remote is not True:
        raise GptTuiError(
            f"host={host!r} is reachable from other machines: pass allow_remote=True if you "
            "mean it (the token is then the only lock; an SSH tunnel to 127.0.0.1 is safer)"
        )


@with_only("gpt_tui.listen")
@contextmanager
def listen(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    path: str | Path | None = None,
    tcp: int | None = None,
    host: str = "127.0.0.1",
    allow_remote: bool = False,
    every: int = 10,
    watch_health: Callable[[], dict[str, Any]] | None = None,
) -> Iterator[Listener]:
    """Let `gpt-tui attach` look into this training loop (see the module doc). Under
    torchrun every rank must call it; `every`: the steps between two exchanges of the
    attach flag between ranks. `tcp=PORT`: listen on `host` (127.0.0.1) instead of a Unix
    socket, with a token printed and written to a 0600 file; a host other than loopback
    needs `allow_remote=True`. `watch_health`: figures `attach` shows (a watch's)."""
    check_arguments(model, optimizer, 1)
    if optimizer is None:
        raise GptTuiError("listen needs optimizer=: its step is where the loop pauses")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise GptTuiError(f"every={every!r}: a whole number of steps, 1 or more")
    _check_endpoint(tcp, host, allow_remote, path)
    group, rank = _rank_group()
    stem = f"{os.getpid()}" if rank is None else f"{os.getpid()}.rank{rank}"
    command = f"gpt-tui attach {os.getpid()}" + ("" if rank is None else f" --rank {rank}")
    token, remove = None, ()
    if tcp is None:
        where = Path(path) if path is not None else socket_folder() / f"{stem}.sock"
        server, remove, said = bind_unix(where), (where,), f"listening on {where} ({command})"
    else:
        server = bind_tcp(host, tcp + (rank or 0) if tcp else 0)
        port, token = server.getsockname()[1], new_token()
        record = socket_folder() / f"{stem}.tcp"
        write_endpoint_file(record, {"host": host, "port": port, "token": token,
                                     "pid": os.getpid()})  # fmt: skip
        remove = (record,)
        reach = socket.gethostname() if host in ("0.0.0.0", "::") else host
        said = (
            f"listening on {host}:{port}, token {token} (in {record}; "
            f"{command}, or gpt-tui attach {reach}:{port} --token TOKEN)"
        )
        if not is_loopback(host):
            log(f"warning: {host}:{port} is open to other machines (allow_remote=True): the "
                "token is its only lock and the connection is not encrypted")  # fmt: skip
    listener = Listener(
        model, optimizer, server, token=token, remove=remove, group=group, every=every,
        watch_health=watch_health,
    )  # fmt: skip
    log(said)
    try:
        yield listener
    finally:
        listener.close()


__all__ = ["Listener", "listen", "peer_uid", "socket_folder"]
