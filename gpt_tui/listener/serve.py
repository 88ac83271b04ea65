"""The Listener: an endpoint's accepting thread, the hooks on the run, and the pause at a
step boundary while a client is attached (see the package's doc)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn as nn

from ..engine.training.watch_compile import inner_module
from ..errors import GptTuiError, tell
from . import answers
from .wire import (
    HANDSHAKE_SECONDS,
    WireClosed,
    WireError,
    peer_uid,
    receive,
    receive_blob,
    send,
    server_handshake,
)

LOSSES_KEPT = 16
Call = tuple[tuple[Any, ...], dict[str, Any]]


def log(line: str) -> None:
    tell(f"gpt-tui listen: {line}")


def _hang_up(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def describe_changes(applied: list[list[Any]]) -> str:
    return ", ".join(f"{name} ({changed:,} of {total:,} elements changed)"
                     for name, changed, total in applied)  # fmt: skip


class Listener:
    """One listened run: `server` is its bound endpoint (a Unix socket, or TCP with
    `token`), `remove` the files that go with it, `watch_health` the watch's figures."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        server: socket.socket,
        *,
        token: str | None = None,
        remove: tuple[Path, ...] = (),
        group: Any = None,
        every: int = 1,
        watch_health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.model, self.optimizer, self._server = model, optimizer, server
        self._token, self._remove, self._watch_health = token, remove, watch_health
        self.group, self.every = group, every  # under torchrun: the ranks' own gloo group
        self.rank = None if group is None else torch.distributed.get_rank()
        self.step = 0
        self.clients = 0  # clients served (or lost) at a step boundary
        self._call: Call | None = None
        self._output: Any = None
        self._losses: deque[torch.Tensor] = deque(maxlen=LOSSES_KEPT)  # detached, on device
        self._client: tuple[socket.socket, IO[bytes]] | None = None
        self._lock = threading.Lock()
        self._waiting = threading.Event()  # a client waits for the next step boundary
        self._handles = [
            model.register_forward_pre_hook(self._remember_batch, with_kwargs=True),
            model.register_forward_hook(self._remember_output),
            optimizer.register_step_post_hook(self._boundary),
        ]
        self._thread = threading.Thread(target=self._accept, name="gpt-tui-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._server.close()  # ends the accepting thread
        self._thread.join(timeout=10)
        with self._lock:
            waiting, self._client = self._client, None
        if waiting is not None:  # a client the loop never reached: told, not left hanging
            log("a client waited for a step boundary the loop never reached")
            self._refuse(waiting[0], "the loop ended before its next step boundary")
        for path in self._remove:
            path.unlink(missing_ok=True)
        if self.group is not None and torch.distributed.is_initialized():
            # its own group ends with it, not in the interpreter's exit, where gloo's
            # threads may be torn down in any order
            torch.distributed.destroy_process_group(self.group)
            self.group = None

    # -- the accepting thread ---------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, address = self._server.accept()
            except OSError:
                return  # closed
            reader = conn.makefile("rb")
            if not self._admit(conn, reader, address):
                reader.close()
                conn.close()
                continue
            with self._lock:
                busy = self._client is not None
                if not busy:
                    self._client = (conn, reader)
            if busy:
                log("refused a second client: one is attached")
                self._refuse(conn, "busy: another client is attached")
                continue
            self._waiting.set()

    def _admit(self, conn: socket.socket, reader: IO[bytes], address: Any) -> bool:
        """A Unix socket's client of this user, or a TCP client that proved the token."""
        if self._token is None:
            uid = peer_uid(conn)
            if uid is not None and uid != os.getuid():
                log(f"refused a client of user {uid}")
                return False
            return True
        # A silent or slow client does not hold the door: the whole handshake has a deadline.
        deadline = threading.Timer(HANDSHAKE_SECONDS, _hang_up, (conn,))
        deadline.start()
        try:
            why = server_handshake(conn, reader, self._token)
        except (OSError, WireError) as err:
            why = str(err)
        finally:
            deadline.cancel()
        where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "a client"
        if why is not None:
            log(f"refused {where}: {why}")
            self._refuse(conn, f"{why}: give the token the run printed (--token)")
            return False
        return True

    @staticmethod
    def _refuse(conn: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):  # it may have gone first
            send(conn, {"error": why})
        conn.close()

    # -- hooks, in the training thread --------------------------------------------------------

    def _remember_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch.is_grad_enabled():
            self._call = (args, kwargs)

    def _remember_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if torch.is_grad_enabled():
            self._output = output
            loss = answers.loss_of(output)
            if loss is not None:
                self._losses.append(loss.detach())  # read only when a client asks

    def _boundary(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        self.step += 1
        if self.group is None:
            if self._waiting.is_set():
                self._attach()
            return  # nobody attached: the whole cost
        if self.step % self.every:
            return
        # Under torchrun every rank pauses at the same boundary, or the run's next
        # collective would hang: one integer, "a client waits somewhere", every `every`.
        import torch.distributed as dist

        flag = torch.tensor([int(self._waiting.is_set())])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if not flag.item():
            return
        if self._waiting.is_set():
            changes = self._attach()
        else:
            changes = None
            log(f"rank {self.rank} waits at step {self.step} while another rank is attached")
        self._share(changes)

    def _share(self, blob: bytes | None) -> None:
        """The attached rank's applied changes go to every rank, so the replicas stay
        equal: its blob's size in one all_gather (the others' -1; this is also the ranks'
        barrier), then the blob in one broadcast, checked and applied by each rank."""
        import torch.distributed as dist

        world = dist.get_world_size(self.group)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
        mine = torch.tensor([-1 if blob is None else len(blob)])
        dist.all_gather(sizes, mine, group=self.group)
        src = next((r for r, s in enumerate(sizes) if int(s) >= 0), None)
        if src is None or int(sizes[src]) == 0:
            return
        data = torch.empty(int(sizes[src]), dtype=torch.uint8)
        if blob is not None:
            data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        dist.broadcast(data, src=dist.get_global_rank(self.group, src), group=self.group)
        if blob is None:
            try:
                changes = answers.read_changes(self.model, data.numpy().tobytes())
            except answers.ChangeError as err:  # a rank whose model differs: said, not fatal
                log(f"rank {self.rank} could not apply rank {src}'s changes: {err}")
                return
            applied = answers.apply_changes(self.model, changes)
            log(f"rank {self.rank} applied rank {src}'s client's changes at step "
                f"{self.step}: {describe_changes(applied)}")  # fmt: skip

    def _attach(self) -> bytes | None:
        """Serve the waiting client until it detaches or goes; returns the changes it
        applied (the tensor file's bytes), if any."""
        self._waiting.clear()
        with self._lock:
            client = self._client
        if client is None:
            return None
        conn, reader = client
        session = _Session(self, conn, reader)
        try:
            session.serve()
        except (OSError, WireError) as err:
            log(f"the client went away ({err}); the run goes on")
        finally:
            reader.close()
            conn.close()
            self.clients += 1
            self._release(conn)
            session.clean()
        return session.applied

    def _release(self, conn: socket.socket) -> None:
        with self._lock:
            if self._client is not None and self._client[0] is conn:
                self._client = None

    # -- what the session reads --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return answers.state(self.model, self.step, self._output, answers.batch_of(self._call))

    def health(self) -> dict[str, Any]:
        figures = {"run": answers.health(self.model, list(self._losses))}
        if self._watch_health is not None:
            figures["watch"] = self._watch_health()
        return figures


class _Session:
    """One attached client's requests, answered in the training thread."""

    def __init__(self, listener: Listener, conn: socket.socket, reader: IO[bytes]) -> None:
        self.listener, self.conn, self.reader = listener, conn, reader
        self.applied: bytes | None = None
        self._folders: list[Path] = []

    def serve(self) -> None:
        run = self.listener
        log(f"a client attached at step {run.step}; the run waits")
        send(self.conn, {"attached": run.state()})
        while True:
            try:
                request = receive(self.reader)
            except WireClosed:
                log("the client went away; the run goes on")
                return
            op = request.get("op")
            if op == "detach":
                run._release(self.conn)  # before the answer: the next client is welcome
                send(self.conn, {"detached": run.step})
                log("the client detached; the run goes on")
                return
            if op == "case":
                self._send_case()
            elif op == "apply":
                send(self.conn, self._apply(request.get("bytes")))
            else:
                send(self.conn, self._safely(op))

    def _safely(self, op: Any) -> dict[str, Any]:
        """A request that fails on this model is the client's answer, not the run's end."""
        try:
            return self._answer(op)
        except Exception as err:  # the user's model may raise anything
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log(f"the request {op!r} failed ({why}); the run goes on")
            return {"error": why}

    def _answer(self, op: Any) -> dict[str, Any]:
        run = self.listener
        if op == "state":
            return run.state()
        if op == "health":
            return run.health()
        if op == "layout":
            return answers.layout(run.model)
        if op == "forward":
            return answers.forward(run.model, run._call)
        if op == "train-step":
            return answers.train_copy(run.model, run.optimizer, run._call)
        return {"error": f"unknown request {op!r}"}

    def _send_case(self) -> None:
        """The live state as a case, its files sent over the connection (the client may
        be on another machine), then removed here."""
        run = self.listener
        facts = {**run.state(), "health": run.health()}
        try:
            root, folder, summary = answers.write_live_case(
                run.model, run.step, facts, answers.batch_of(run._call)
            )
        except GptTuiError as err:
            send(self.conn, {"error": str(err)})
            return
        self._folders.append(root)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        names = [[p.relative_to(folder).as_posix(), p.stat().st_size] for p in files]
        send(self.conn, {"case": {"summary": summary, "files": names}})
        for path in files:
            with path.open("rb") as f:
                self.conn.sendfile(f)
        self.clean()

    def _apply(self, size: Any) -> dict[str, Any]:
        """The client's changes, applied here at the boundary before the run goes on."""
        run = self.listener
        live = inner_module(run.model).state_dict(keep_vars=True).values()
        limit = sum(t.numel() * t.element_size() for t in live) + (1 << 20)
        blob = receive_blob(self.reader, size, limit)
        if self.applied is not None:
            return {"error": "one set of changes per attach: this one was not applied"}
        try:
            applied = answers.apply_changes(run.model, answers.read_changes(run.model, blob))
        except answers.ChangeError as err:
            log(f"refused the client's changes: {err}; the run goes on unchanged")
            return {"error": str(err)}
        self.applied = blob
        if not any(changed for _, changed, _ in applied):
            log(f"the client's changes at step {run.step} change nothing")
        else:
            log(f"applied the client's changes at step {run.step}: "
                f"{describe_changes(applied)}; the optimizer's state carries on")  # fmt: skip
        return {"applied": applied}

    def clean(self) -> None:
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders = []
