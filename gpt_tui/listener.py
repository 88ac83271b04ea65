"""`gpt_tui.listen(model, optimizer=opt)`: a running training loop that `gpt-tui attach`
can look into.

import gpt_tui

with gpt_tui.listen(model, optimizer=optimizer):
    for step in range(max_iters):
        ...  # the loop, unchanged

It opens a Unix socket (mode 0600, in a folder only its user can enter: the runtime
folder, `$XDG_RUNTIME_DIR/gpt-tui/runs/<pid>.sock`, else `/tmp/gpt-tui-<uid>/runs/`). While no one
is attached it costs a flag read per optimizer step. A client of the same user
connects; at the next step boundary (the end of `optimizer.step()`) the loop pauses and
answers its requests, one JSON line each, in the training thread, then goes on when the
client detaches or goes away. Requests read the run and never change it:
- `state`: the step, the last loss, the last batch's shape, the model;
- `forward`: the last batch through the live model without grad, the random state and
  the training flag put back: its loss and logits statistics;
- `train-step`: one training step of the last batch on a copy of the model and of the
  optimizer: the loss, the gradient norm and the largest relative weight change.
A lost client, a second client (refused: "busy"), a client of another user (refused):
one line in the run's log each, and the run goes on. `case` writes the live state as a
case folder for the client's app (`gpt-tui attach --app`).

Under torchrun each rank listens on `<pid>.rank<N>.sock`; every `every` steps the ranks
all-reduce one integer ("a client waits") on a gloo group of listen's own, and when it is
up every rank pauses at that boundary: the attached one serves its client, the others
wait in a barrier, so the run's collectives stay in step.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from .engine.training.watch import check_arguments
from .engine.training.watch_compile import copy_without_hooks, inner_module
from .errors import GptTuiError


def socket_folder() -> Path:
    """The folder of the sockets: the user's runtime folder, else one in /tmp (0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "gpt-tui" if runtime else Path(f"/tmp/gpt-tui-{os.getuid()}")
    folder = base / "runs"
    for level in (base, folder):  # one at a time: parents=True would make base 0755
        level.mkdir(mode=0o700, exist_ok=True)
    for level in (base, folder):
        if level.stat().st_uid != os.getuid() or level.stat().st_mode & 0o077:
            raise GptTuiError(f"{level} is not private to you (owner and mode 0700): remove it")
    return folder


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end (Linux SO_PEERCRED), or None."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, 12))
    return uid


def _log(line: str) -> None:
    print(f"gpt-tui listen: {line}", file=sys.stderr, flush=True)


def _loss_of(output: Any) -> torch.Tensor | None:
    items = output if isinstance(output, tuple) else (output,)
    return next((t for t in items if isinstance(t, torch.Tensor) and t.dim() == 0), None)


def _logits_of(output: Any) -> torch.Tensor | None:
    items = output if isinstance(output, tuple) else (output,)
    return next((t for t in items if isinstance(t, torch.Tensor) and t.dim() > 0), None)


class Listener:
    """The socket, its accepting thread and the hooks of one listened run."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        path: Path,
        group: Any = None,
        every: int = 1,
    ) -> None:
        self.model, self.optimizer, self.path = model, optimizer, path
        self.group, self.every = group, every  # under torchrun: the ranks' own gloo group
        self.rank = None if group is None else torch.distributed.get_rank()
        self.step = 0
        self.clients = 0  # clients served (or lost) at a step boundary
        self._args: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._output: Any = None
        self._client: socket.socket | None = None
        self._lock = threading.Lock()
        self._waiting = threading.Event()  # a client waits for the next step boundary
        self._cases: list[Path] = []  # case folders written for the attached client
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if path.exists():
            path.unlink()
        old = os.umask(0o177)
        try:
            self._server.bind(str(path))  # created 0600
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._server.listen(2)
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
        self.path.unlink(missing_ok=True)
        if self.group is not None and torch.distributed.is_initialized():
            # its own group ends with it, not in the interpreter's exit, where gloo's
            # threads may be torn down in any order
            torch.distributed.destroy_process_group(self.group)
            self.group = None

    # -- the accepting thread ---------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            uid = peer_uid(conn)
            if uid is not None and uid != os.getuid():
                _log(f"refused a client of user {uid}")
                conn.close()
                continue
            with self._lock:
                busy = self._client is not None
                if not busy:
                    self._client = conn
            if busy:
                _log("refused a second client: one is attached")
                _send(conn, {"error": "busy: another client is attached"})
                conn.close()
                continue
            self._waiting.set()

    # -- hooks, in the training thread --------------------------------------------------------

    def _remember_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch.is_grad_enabled():
            self._args = (args, kwargs)

    def _remember_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if torch.is_grad_enabled():
            self._output = output

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
            self._attach()
        else:
            _log(f"rank {self.rank} waits at step {self.step} while another rank is attached")
        dist.barrier(group=self.group)

    def _attach(self) -> None:
        self._waiting.clear()
        with self._lock:
            conn = self._client
        if conn is None:
            return
        try:
            self._serve(conn)
        except (OSError, ValueError) as err:
            _log(f"the client went away ({err}); the run goes on")
        finally:
            conn.close()
            self.clients += 1
            self._release(conn)
            for folder in self._cases:  # the client's copies go with it
                shutil.rmtree(folder, ignore_errors=True)
            self._cases = []

    def _release(self, conn: socket.socket) -> None:
        with self._lock:
            if self._client is conn:
                self._client = None

    def _serve(self, conn: socket.socket) -> None:
        _log(f"a client attached at step {self.step}; the run waits")
        reader = conn.makefile("r", encoding="utf-8")
        _send(conn, {"attached": self._state()})
        for line in reader:
            request = json.loads(line).get("op")
            if request == "detach":
                self._release(conn)  # before the answer: the next client is welcome then
                _send(conn, {"detached": self.step})
                _log("the client detached; the run goes on")
                return
            answers = {
                "state": self._state,
                "forward": self._forward,
                "train-step": self._train,
                "case": self._case,
            }
            answer = answers.get(request)
            _send(conn, answer() if answer else {"error": f"unknown request {request!r}"})
        _log("the client went away; the run goes on")

    # -- answers: read the run, never change it ------------------------------------------

    def _state(self) -> dict[str, Any]:
        loss = _loss_of(self._output)
        batch = [list(t.shape) for t in self._batch() if isinstance(t, torch.Tensor)]
        params = sum(p.numel() for p in self.model.parameters())
        return {
            "step": self.step,
            "loss": None if loss is None else float(loss.detach()),
            "batch": batch,
            "model": type(inner_module(self.model)).__name__,
            "parameters": params,
            "pid": os.getpid(),
        }

    def _batch(self) -> tuple[Any, ...]:
        args, kwargs = self._args or ((), {})
        return (*args, *kwargs.values())

    def _forward(self) -> dict[str, Any]:
        if self._args is None:
            return {"error": "no training batch seen yet"}
        args, kwargs = self._args
        model = inner_module(self.model)
        rng = _rng_state()  # dropout draws from it: the run must draw the same numbers
        try:
            with torch.no_grad():
                output = model(*args, **kwargs)
        finally:
            _set_rng_state(rng)
        loss, logits = _loss_of(output), _logits_of(output)
        answer: dict[str, Any] = {"loss": None if loss is None else float(loss)}
        if logits is not None:
            x = logits.detach().float()
            answer["logits"] = {
                "shape": list(x.shape),
                "mean": float(x.mean()),
                "std": float(x.std()),
                "finite": bool(torch.isfinite(x).all()),
            }
        return answer

    def _case(self) -> dict[str, Any]:
        """The live state as a case (weights, the last batch, the step): a copy for the
        client's app, in a private temporary folder removed when the client goes."""
        from .engine.training.watch_case import CASE_FILE, read_case
        from .engine.training.watch_finding import Finding
        from .engine.training.watch_report import write_case
        from .io.checkpoints.save import atomic_write_text

        root = Path(tempfile.mkdtemp(prefix="gpt-tui-attach-"))  # 0700, this user's
        self._cases.append(root)
        state = self._state()
        loss = "" if state["loss"] is None else f", loss {state['loss']:.4f}"
        summary = f"the live run, pid {os.getpid()}, at step {self.step}{loss}"
        tensors = tuple(t for t in self._batch() if isinstance(t, torch.Tensor))
        finding = Finding(self.step, cast(Any, "attach"), "the live run", summary)
        written = write_case(root, inner_module(self.model), finding, tensors, None)
        if written.path is None:
            return {"error": f"the case could not be written: {written.error}"}
        case = read_case(written.path)
        case.update(summary=summary, attach=state)
        atomic_write_text(written.path / CASE_FILE, json.dumps(case, indent=2) + "\n")
        atomic_write_text(written.path / "README.md", f"# gpt-tui attach: {summary}\n")
        return {"case": str(written.path), "summary": summary}

    def _train(self) -> dict[str, Any]:
        if self._args is None:
            return {"error": "no training batch seen yet"}
        args, kwargs = self._args
        model = inner_module(self.model)
        twin = copy_without_hooks(model)
        rng = _rng_state()
        try:
            place = {id(p): i for i, p in enumerate(model.parameters())}
            params = list(twin.parameters())
            groups = [
                {**g, "params": [params[place[id(p)]] for p in g["params"]]}
                for g in self.optimizer.param_groups
            ]
            opt = type(self.optimizer)(groups)
            # load_state_dict keeps the tensors it is given: the copy's step must not
            # move the run's moments.
            opt.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
            before = [p.detach().clone() for p in twin.parameters()]
            with torch.enable_grad():
                loss = _loss_of(twin(*args, **kwargs))
                if loss is None:
                    return {"error": "the model returned no loss for the last batch"}
                loss.backward()
            grads = [p.grad for p in twin.parameters() if p.grad is not None]
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            opt.step()
        finally:
            _set_rng_state(rng)
        change = max(
            float((p.detach() - b).norm() / b.norm()) if float(b.norm()) else math.inf
            for p, b in zip(twin.parameters(), before, strict=True)
        )
        return {"loss": float(loss.detach()), "grad_norm": norm, "max_relative_change": change}


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


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


@contextmanager
def listen(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    path: str | Path | None = None,
    every: int = 10,
) -> Iterator[Listener]:
    """Let `gpt-tui attach` look into this training loop (see the module doc). Under
    torchrun every rank must call it; `every`: the steps between two exchanges of the
    attach flag between ranks."""
    check_arguments(model, optimizer, 1)
    if optimizer is None:
        raise GptTuiError("listen needs optimizer=: its step is where the loop pauses")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise GptTuiError(f"every={every!r}: a whole number of steps, 1 or more")
    group, rank = _rank_group()
    name = f"{os.getpid()}.sock" if rank is None else f"{os.getpid()}.rank{rank}.sock"
    where = Path(path) if path is not None else socket_folder() / name
    listener = Listener(model, optimizer, where, group, every)
    command = f"gpt-tui attach {os.getpid()}" + ("" if rank is None else f" --rank {rank}")
    _log(f"listening on {where} ({command})")
    try:
        yield listener
    finally:
        listener.close()
