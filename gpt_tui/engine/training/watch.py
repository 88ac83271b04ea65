"""Non-finite checks inside a real training loop: `Watch(model)`, behind `gpt_tui.watch`.

Hooks on the model's embeddings, blocks, attention and MLP modules and head (found by
structure, as the probes find them) and on the model itself record, on the tensors' own
device, whether each module's input and output were finite and, through hooks on those
tensors' gradients, whether its grad_output and grad_input were. A flag is a tensor's
fp32 sum, non-finite exactly when an element is. Nothing is read back inside the forward
or backward hooks: at the end of a micro-step's backward (when it reaches the first module
of the forward order, or at the next forward if that never comes) the flags are folded on
the device into one key, the first non-finite place; one process reads it there, once.
Given the optimizer, its step hooks mark the step's boundary (steps and micro-steps are
counted as the loop counts them) and check the gradients before the update and the
parameters after it. `every=N` checks one step in N.

Under torch.distributed (see watch_ranks.py) the keys stay on the device until the
optimizer's step, where the ranks exchange them in one collective (and once more after the
update) and all agree on the first finding. A compiled or DDP-wrapped model: see
watch_compile.py.

The first non-finite value is named in the phase it arose in:
- forward: the first module, in forward order, whose output is not finite while its input
  was;
- loss: the model's scalar output (its loss) while the logits were finite, e.g. a batch
  whose targets are all ignored (0/0); or backward's start: the gradient into the model's
  loss not finite while the loss was (the loop called backward() on `loss * nan` or
  `loss / 0`), or, backward not coming through the model's loss, the gradient into its
  output (the first module backward reaches) already not finite (a loss computed outside
  the model that was not finite), or the gradient the loop sent into the logits returned
  beside a loss not finite while the loss's was (a z-loss term: the returned logits are a
  view of their own). A case cannot replay these: it says so;
- backward: the first module, in backward order, whose grad_input is not finite while its
  grad_output was (or the model's loss, whose backward made the gradient into its output
  not finite while the gradient into the loss was finite); or whose output received a
  gradient that is not finite while the next module, reading it, sent a finite one back (a
  loss taken on an intermediate activation: each module reads its input through a view of
  its own, so what it sends back is its own gradient, without what others add);
- gradients (given `optimizer=`): a parameter's gradient that is not finite before the
  update while every watched module's gradient was (or that another rank's gradients
  made non-finite in the all-reduce);
- optimizer (given `optimizer=`): a parameter that its update made non-finite while its
  gradient was finite. Before an update that a non-finite setting (an lr of inf) will break,
  and only then, the weights, gradients and optimizer state are copied for the case
  (watch_update.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ..analysis.probe_points import find_probe_points, first_tensor
from .held_values import HeldValues, held_text, module_parameters, nonfinite_parameters
from .watch_arguments import WatchArgumentError, check_arguments
from .watch_compile import inner_module, is_compiled, recompile, replay_eagerly
from .watch_finding import NO_NAMES, Finding, MicroNames, Phase, name_place
from .watch_places import Flags, backward_places, micro_key
from .watch_ranks import MICRO_STRIDE, NO_KEY, exchange, first_bad, process_group
from .watch_update import BeforeUpdate, copy_before_update, nonfinite_settings, update_will_break


class NonFiniteError(GptTuiError, FloatingPointError):
    """Raised by `watch(..., on="raise")` at the first non-finite value (with `on="open"`,
    once the app is closed)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.summary)
        self.finding = finding


def _finite(value: Any) -> torch.Tensor | None:
    """A 0-dim fp32 sum of the value's first tensor, on its device (no host sync): it is
    finite exactly when every element is (NaN and Inf propagate through a sum), short of
    an fp32 overflow of the sum itself. None for no floating-point tensor."""
    t = first_tensor(value)
    if t is None or not t.is_floating_point():
        return None
    return t.detach().sum(dtype=torch.float32)


def _first(flags: list[torch.Tensor | None]) -> torch.Tensor | None:
    """A micro-step's one flag of a kind (the gradient into its loss, ...), if it came."""
    return flags[0] if flags else None


def _sums(tensors: list[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """The fp32 sums of the tensors, stacked on the device (None counts as 0: finite)."""
    zero = like.new_zeros((), dtype=torch.float32)
    return torch.stack([zero if t is None else t.detach().sum(dtype=torch.float32).to(
        zero.device) for t in tensors])  # fmt: skip


def _steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """How many steps the optimizer has taken (its state's "step", as Adam keeps it), so
    that a watch attached mid-run counts steps as the loop does; 0 when it keeps none."""
    for state in optimizer.state.values():
        step = state.get("step") if isinstance(state, dict) else None
        if isinstance(step, (int, float, torch.Tensor)):
            return int(step)
    return 0


class Watch:
    """The hooks of one watched model; see the module doc. `on_finding` is called once,
    with the finding and its micro-step's batch, at the first non-finite value."""

    def __init__(
        self,
        model: nn.Module,
        on_finding: Callable[[Finding, tuple[Any, ...]], None],
        *,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 1,
        distributed: bool = True,
    ) -> None:
        check_arguments(model, optimizer, every)
        self.group = process_group() if distributed else None
        if self.group is not None and optimizer is None:
            raise WatchArgumentError(
                "under torch.distributed, watch needs optimizer=: its step is where the "
                "ranks compare what they found (gpt_tui.watch(model, optimizer=optimizer))"
            )
        self.outer, self.model = model, inner_module(model)
        self.on_finding, self.optimizer, self.every = on_finding, optimizer, every
        self.compiled = is_compiled(model)
        self.notes: list[str] = [recompile()] if self.compiled else []
        self.step = _steps_taken(optimizer) if optimizer is not None else -1
        self.micro, self.micro_steps = -1, None if optimizer is not None else 1
        self._counts: set[int] = set()  # the forwards per step the loop has taken so far
        self.finding: Finding | None = None
        # The update's inputs, copied only before an update a non-finite setting will break.
        self.before_update: BeforeUpdate | None = None
        self.batch: tuple[Any, ...] = ()
        self._calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []  # this step's
        self._names: dict[int, MicroNames] = {}  # per micro-step
        self._key: torch.Tensor | None = None  # under a process group: the step's first
        self._forward: list[Flags] = []
        self._backward: list[Flags] = []
        # Chain links of this micro-step: a module -> the module whose output is its input.
        self._links: dict[str, str] = {}
        # The last module's output, and the module it ran in; the modules running now.
        # (Weakly: a head's logits must not outlive the user's last reference to them.)
        self._last_out: tuple[str, weakref.ref[torch.Tensor], str] | None = None
        self._open: list[str] = []
        self._loss: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._into_loss: list[torch.Tensor | None] = []  # the gradient into the model's loss
        # The gradient the loop sent into the logits the model returned beside its loss.
        self._into_returned: list[torch.Tensor | None] = []
        self._pending = False  # flags recorded and not yet folded
        self._params = [p for g in optimizer.param_groups for p in g["params"]] if optimizer else []
        self._param_names = {id(p): n for n, p in self.model.named_parameters()}
        modules = dict(self.model.named_modules())
        points = [p for p in find_probe_points(self.model) if p.name in modules]
        # An embedding's input (token ids) takes no gradient: its backward is not read.
        self._first = next((p.name for p in points if p.kind != "embedding"), None)
        self._lookups = {p.name for p in points if p.kind == "embedding"}
        self._handles = [
            model.register_forward_pre_hook(self._start_step, with_kwargs=True),
            model.register_forward_hook(self._model_output),
        ]
        for p in points:
            module = modules[p.name]
            if p.kind != "embedding" and not self.compiled:
                pre = self._own_input(p.name)
                self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._forward_hook(p.name)))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._before_optimizer))
            self._handles.append(optimizer.register_step_post_hook(self._after_optimizer))

    @property
    def checked(self) -> bool:
        """Whether this step is checked (one step in `every`, before the first finding)."""
        return self.finding is None and self.step % self.every == 0

    @property
    def active(self) -> bool:
        """Whether this forward is checked (a checked step's forward with grad)."""
        return self.checked and torch.is_grad_enabled()

    def flush(self) -> None:
        """Fold what the last micro-step left (read it, without a process group)."""
        if self._pending:
            self._check()

    def close(self) -> None:
        """Read what the last step left, then remove every hook."""
        try:
            if self.group is None:
                self.flush()
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            if self.compiled:
                torch._dynamo.reset()  # the compiled code keeps no trace of the hooks

    # -- hooks (no host sync in any of them) ----------------------------------------------

    def _start_step(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not torch.is_grad_enabled():
            return  # an evaluation pass: not a training step
        self.flush()  # the last micro-step's backward never ended (its loss raised?)
        if self.optimizer is None:
            self.step += 1  # no step boundary known: every forward is a step
            self.micro = -1
        self.micro += 1
        if self.micro == 0:
            self._calls, self._names, self._key = [], {}, None
        self.batch = (*args, *kwargs.values())
        if self.active:
            self._calls.append((args, kwargs))
        self._forward, self._backward, self._loss, self._into_loss = [], [], None, []
        self._into_returned = []
        self._links, self._last_out, self._open = {}, None, []

    def _own_input(self, name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            if not self.active:
                return None
            enclosing = self._open[-1] if self._open else ""
            self._open.append(name)
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.requires_grad:
                return None
            last = self._last_out
            # The module before it in the chain: the one whose output it reads, or the one
            # that ran just before it inside the same module (or the model): nanochat
            # norms the last block's output for the head, and mixes x0 into a block's input.
            if last is not None and (last[1]() is x or last[2] == enclosing):
                self._links[name] = last[0]
            # The module gets a view of its own: the gradient into it is then what this
            # module's backward sends, without what other users of the tensor (a loss taken
            # on an intermediate activation) add to it.
            return (x.view_as(x), *args[1:]), kwargs

        return torch.compiler.disable(hook)  # as `_forward_hook`, for a model compiled later

    def _forward_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.active:
                return
            x, y = first_tensor(args), first_tensor(output)
            self._forward.append((name, _finite(x), _finite(y)))
            self._pending = True
            if self._open and self._open[-1] == name:
                self._open.pop()
            enclosing = self._open[-1] if self._open else ""
            self._last_out = (name, weakref.ref(y), enclosing) if y is not None else None
            # Backward through tensor hooks, cheaper than full backward hooks: the gradient
            # of the output is the module's grad_output, the gradient of its own view of its
            # input (`_own_input`) its grad_input.
            if y is not None and y.requires_grad and x is not None and x.requires_grad:
                grads: list[torch.Tensor | None] = [None]
                y.register_hook(lambda g: grads.__setitem__(0, _finite(g)))
                x.register_hook(lambda g: self._backward_seen(name, grads[0], _finite(g)))

        # Under torch.compile the hook runs eagerly between the graph's pieces: traced,
        # its tensor hooks would break the graph and recompile it once per module name.
        return torch.compiler.disable(hook)

    def _backward_seen(
        self, name: str, grad_output: torch.Tensor | None, grad_input: torch.Tensor | None
    ) -> None:
        if not self._pending:
            return
        self._backward.append((name, grad_output, grad_input))
        if name == self._first:  # backward has reached the first module: the end
            self._check()

    def _model_output(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self.active:
            return None
        self._last_out = None  # the links are made
        # (logits, loss) as nanoGPT returns, or nanochat's bare loss when given targets.
        items = output if isinstance(output, tuple) else (output,)
        tensors = [t for t in items if isinstance(t, torch.Tensor)]
        losses = [t for t in tensors if t.dim() == 0]
        logits = [t for t in tensors if t.dim() > 0]
        if losses:
            self._loss = (_finite(logits[0]) if logits else None, _finite(losses[0]))
            self._pending = True
            if losses[0].requires_grad:  # backward's start, when it comes through this loss
                into = self._into_loss  # this micro-step's, whenever its backward runs
                losses[0].register_hook(lambda g: into.append(_finite(g)))
            if logits and logits[0].requires_grad and isinstance(output, tuple):
                return self._returned_logits(output, logits[0])
        return None

    def _returned_logits(self, output: tuple, logits: torch.Tensor) -> tuple | None:
        """The model's output with its logits as a view of their own: what the loop's loss
        takes from them (an auxiliary z-loss) then sends its gradient there, apart from
        what the model's own loss sends into the same logits."""
        if self.compiled:
            return None
        returned = logits.view_as(logits)
        into = self._into_returned
        returned.register_hook(lambda g: into.append(_finite(g)))
        return tuple(returned if item is logits else item for item in output)

    def _before_optimizer(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        if not self.checked or not self._params:
            return
        self.flush()
        if self.finding is not None:
            return
        grads = _sums([p.grad for p in self._params], self._params[0])
        key = first_bad(~torch.isfinite(grads))
        if update_will_break(optimizer):  # host numbers only: no cost on a sound step
            self.before_update = copy_before_update(self.model, optimizer)
        if self.group is None:
            index = int(key)  # one host read per checked step
            if index != NO_KEY:
                self._gradients_found(index, self.micro + 1)
            return
        rank, world = self.group
        mine = self._key if self._key is not None else key.new_tensor(NO_KEY)
        table = exchange([mine, key], world)  # the step's one collective before the update
        keys, grads_bad = [row[0] for row in table], [row[1] for row in table]
        first = min(keys)
        if first != NO_KEY:
            ranks = tuple(r for r, k in enumerate(keys) if k == first)
            micro, phase, where, detail, unreplayable = self._decode(first)
            received = None
            if rank not in ranks and grads_bad[rank] != NO_KEY:
                received = (
                    f"rank {rank} received non-finite gradients from the all-reduce of "
                    f"step {self.step}"
                )
            self._found(phase, where, detail, micro, self.micro + 1, ranks, received,
                        unreplayable=unreplayable)  # fmt: skip
            return
        bad = tuple(r for r, g in enumerate(grads_bad) if g != NO_KEY)
        if bad:
            name = self._param_name(grads_bad[bad[0]])
            why = "its gradient is not finite after backward and the reduce, while every "
            why += "watched module's output and gradient was"
            self._found("gradients", name, why, None, self.micro + 1, bad)

    def _after_optimizer(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        try:
            if self.checked and self._params:
                self._check_update()
        finally:
            if self.finding is None:
                self.before_update = None
            self.step += 1
            self.micro_steps = self.micro + 1 if self.micro >= 0 else self.micro_steps
            if self.micro >= 0:
                self._counts.add(self.micro + 1)
            self.micro = -1

    # -- reading the flags: one host transfer (or one collective) per checked step --------

    def _check_update(self) -> None:
        first = self._params[0]
        values = _sums(list(self._params), first)
        grads = _sums([p.grad for p in self._params], first)
        key = first_bad(~torch.isfinite(values) & torch.isfinite(grads))
        why = "its gradient was finite; the update was not"
        if self.group is None:
            index = int(key)
            if index != NO_KEY:
                self._found("optimizer", self._param_name(index), why, None, self.micro + 1)
            return
        keys = [row[0] for row in exchange([key], self.group[1])]  # once after the update
        index = min(keys)
        if index != NO_KEY:
            ranks = tuple(r for r, k in enumerate(keys) if k == index)
            self._found("optimizer", self._param_name(index), why, None, self.micro + 1, ranks)

    def _check(self) -> None:
        self._pending = False
        places, pairs = backward_places(self._backward, self._links)
        key = micro_key(
            [(a, b) for _, a, b in self._forward],
            [self._loss or (None, None),
             (None, _first(self._into_loss)),  # the gradient into the model's loss,
             (None, _first(self._into_returned)),  # into the logits returned beside it,
             (_first(self._into_loss), self._backward[0][1] if self._backward else None),
             *pairs],  # then into the model's output, then the modules' backward
            max(self.micro, 0) * MICRO_STRIDE,
        )  # fmt: skip
        self._names[self.micro] = MicroNames(
            [n for n, _, _ in self._forward], places,
            _first(self._into_loss), self._loss is not None,
        )  # fmt: skip
        if key is None:
            return
        if self.group is not None:  # kept on the device until the step's exchange
            self._key = key if self._key is None else torch.minimum(self._key, key)
            return
        found = int(key)  # the one host read of this micro-step
        if found != NO_KEY:
            micro, phase, where, detail, unreplayable = self._decode(found)
            count = self._count_for(micro)
            self._found(phase, where, detail, micro, count, unreplayable=unreplayable)
        elif self.compiled and not self._forward and self._loss and self._loss[1] is not None:
            self._replay_if_nan(self._loss[1])

    def _replay_if_nan(self, loss: torch.Tensor) -> None:
        """A compiled step whose hooks did not run: replay it when its loss is not finite."""
        if not bool(torch.isfinite(loss)):
            self._replay("loss", "loss", "the loss is not finite", self._count_for(self.micro))

    def _decode(self, key: int) -> tuple[int, Phase, str, str, str | None]:
        """(micro-step, phase, where, detail, why a case cannot replay it) of a key."""
        micro, place = divmod(key, MICRO_STRIDE)
        return micro, *name_place(place, self._names.get(micro, NO_NAMES), self._lookups)

    def _param_name(self, index: int) -> str:
        param = self._params[index] if index < len(self._params) else None
        return self._param_names.get(id(param), f"parameter {index} of the optimizer")

    def _count_for(self, micro: int) -> int | None:
        """The micro-steps per step to say beside a finding inside a step, before its end
        is known: the loop's count while it has not varied, never one `micro` exceeds."""
        n = self.micro_steps if len(self._counts) <= 1 else None
        return None if n is None or micro >= n else n

    def _gradients_found(self, index: int, micro_steps: int | None) -> None:
        why = "its gradient is not finite after backward while every watched module's was"
        if self.compiled:
            self._replay("gradients", self._param_name(index), why, micro_steps)
        else:
            self._found("gradients", self._param_name(index), why, None, micro_steps)

    def _replay(self, phase: Phase, where: str, why: str, micro_steps: int | None) -> None:
        """The compiled graph ran without the hooks: name the module by an eager replay of
        the step's micro-batches on a copy of the model."""
        replayed = replay_eagerly(
            self.model, self._calls, lambda m, cb: Watch(m, cb, distributed=False)
        )
        if replayed is None:
            why += "; an eager replay on a copy of the model named no module"
            self._found(phase, where, why, None, micro_steps)
            return
        micro, f = replayed
        detail = f"{f.detail}; the compiled graph ran without the watch's hooks, an eager "
        detail += "replay of the micro-batch on a copy of the model named it"
        self._found(
            f.phase, f.where, detail, micro, micro_steps, held=f.held, unreplayable=f.unreplayable
        )

    def _group_settings(self, where: str) -> str:
        """The non-finite settings (lr, eps, betas, ...) of the broken parameter's group,
        read at the finding only: `; its group's lr is inf`, or nothing."""
        param = dict(self.model.named_parameters()).get(where)
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        group = next((g for g in groups if any(p is param for p in g["params"])), {})
        bad = nonfinite_settings(group)
        return "; its group's " + ", ".join(bad) if bad else ""

    def _held(self, phase: Phase, where: str, ranks: tuple[int, ...]) -> tuple[HeldValues, ...]:
        """At a forward finding, the module's parameters that already hold NaN/Inf; at an
        optimizer one, the parameter the update broke. One read, on this rank's values."""
        if self.group is not None and self.group[0] not in ranks:
            return ()  # this rank's weights are not where it arose
        if phase == "forward":
            return nonfinite_parameters(module_parameters(self.model, where))
        if phase == "optimizer":
            named = dict(self.model.named_parameters())
            return nonfinite_parameters([(where, named[where])] if where in named else [])
        return ()

    def _found(
        self,
        phase: Phase,
        where: str,
        detail: str,
        micro: int | None,
        micro_steps: int | None,
        ranks: tuple[int, ...] = (),
        received: str | None = None,
        held: tuple[HeldValues, ...] | None = None,
        unreplayable: str | None = None,
    ) -> None:
        if self.optimizer is None:
            micro, micro_steps = None, None
        if held is None:
            held = self._held(phase, where, ranks)
            if phase == "forward" and held:
                detail += "; " + (held_text(held, "at this forward") or "")
            elif phase == "optimizer" and held:
                detail = f"its gradient was finite; the update left {held[0].counts} in it"
            if phase == "optimizer":
                detail += self._group_settings(where)
        self.finding = Finding(
            self.step, phase, where, detail, None, micro, micro_steps,
            ranks[0] if ranks else None, ranks, received, held, None, unreplayable,
        )  # fmt: skip
        batch = self.batch
        if micro is not None and micro < len(self._calls):
            args, kwargs = self._calls[micro]
            batch = (*args, *kwargs.values())
        self.on_finding(self.finding, batch)
