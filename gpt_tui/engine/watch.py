"""Non-finite checks inside a real training loop: `Watch(model)`, behind `gpt_tui.watch`.

Hooks on the model's embeddings, blocks, attention and MLP modules and head (found by
structure, as the probes find them) and on the model itself record, on the tensors' own
device, whether each module's input and output were finite and, through hooks on those
tensors' gradients, whether its grad_output and grad_input were. A flag is a tensor's
fp32 sum, non-finite exactly when an element is. Nothing is read back inside the forward
or backward hooks: the flags of one step are stacked and read by the host once, when
backward reaches the first module of the forward order (the end of the step's backward),
or at the next step's forward if that never comes (a loss that raised); given the
optimizer, the sums of the updated parameters are read once more after its step.
`every=N` checks one step in N.

The first non-finite value is named in the phase it arose in:
- forward: the first module, in forward order, whose output is not finite while its input
  was;
- loss: the model's scalar output (its loss) while the logits were finite, e.g. a batch
  whose targets are all ignored (0/0);
- backward: the first module, in backward order, whose grad_input is not finite while its
  grad_output was;
- optimizer (given `optimizer=`): a parameter that its update made non-finite while its
  gradient was finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn

from ..errors import GptTuiError
from .probes import find_probe_points, first_tensor, unwrap_model

Phase = Literal["forward", "loss", "backward", "optimizer"]


@dataclass(frozen=True)
class Finding:
    """Where the first non-finite value of a watched run arose."""

    step: int  # the training step (0 = the first forward watched)
    phase: Phase
    where: str  # a module path, "loss", or a parameter name
    detail: str  # why that place: "its input was finite", ...
    report: str | None = None  # the folder the case was saved to

    @property
    def summary(self) -> str:
        text = f"step {self.step}: the first non-finite value is in {self.phase} at "
        text += f"{self.where} ({self.detail})"
        return text + (f"; case saved to {self.report}" if self.report else "")


class NonFiniteError(GptTuiError, FloatingPointError):
    """Raised by `watch(..., on="raise")` at the first non-finite value."""

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


class Watch:
    """The hooks of one watched model; see the module doc. `on_finding` is called once,
    with the finding and the step's batch, at the first non-finite value."""

    def __init__(
        self,
        model: nn.Module,
        on_finding: Callable[[Finding, tuple[Any, ...]], None],
        *,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 1,
    ) -> None:
        if every < 1:
            raise GptTuiError(f"every={every}: check every N >= 1 steps")
        self.model = unwrap_model(model)
        self.on_finding = on_finding
        self.every = every
        self.step = -1
        self.finding: Finding | None = None
        self.batch: tuple[Any, ...] = ()
        self._forward: list[tuple[str, torch.Tensor | None, torch.Tensor | None]] = []
        self._backward: list[tuple[str, torch.Tensor | None, torch.Tensor | None]] = []
        self._loss: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._pending = False  # flags recorded and not yet read
        modules = dict(self.model.named_modules())
        points = [p for p in find_probe_points(self.model) if p.name in modules]
        # An embedding's input (token ids) takes no gradient: its backward is not read.
        self._first = next((p.name for p in points if p.kind != "embedding"), None)
        self._handles = [
            self.model.register_forward_pre_hook(self._start_step, with_kwargs=True),
            self.model.register_forward_hook(self._model_output),
        ]
        for p in points:
            hook = self._forward_hook(p.name)
            self._handles.append(modules[p.name].register_forward_hook(hook))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(self._after_optimizer))

    @property
    def active(self) -> bool:
        """Whether this step is checked (a forward with grad, one step in `every`)."""
        return self.finding is None and torch.is_grad_enabled() and self.step % self.every == 0

    def close(self) -> None:
        """Read what the last step left, then remove every hook."""
        if self._pending:
            self._check()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- hooks (no host sync in any of them) ----------------------------------------------

    def _start_step(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not torch.is_grad_enabled():
            return  # an evaluation pass: not a training step
        if self._pending:  # the last step's backward never ended (its loss raised?)
            self._check()
        self.step += 1
        self.batch = (*args, *kwargs.values())
        self._forward, self._backward, self._loss = [], [], None

    def _forward_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.active:
                return
            x, y = first_tensor(args), first_tensor(output)
            self._forward.append((name, _finite(x), _finite(y)))
            self._pending = True
            # Backward through tensor hooks, cheaper than full backward hooks: the gradient
            # of the output is the module's grad_output, the gradient of its input its
            # grad_input (a block's, an attention's or an MLP's input feeds it alone).
            if y is not None and y.requires_grad and x is not None and x.requires_grad:
                grads: list[torch.Tensor | None] = [None]
                y.register_hook(lambda g: grads.__setitem__(0, _finite(g)))
                x.register_hook(lambda g: self._backward_seen(name, grads[0], _finite(g)))

        return hook

    def _backward_seen(
        self, name: str, grad_output: torch.Tensor | None, grad_input: torch.Tensor | None
    ) -> None:
        if not self._pending:
            return
        self._backward.append((name, grad_output, grad_input))
        if name == self._first:  # backward has reached the first module: the end
            self._check()

    def _model_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.active:
            return
        # (logits, loss) as nanoGPT returns, or nanochat's bare loss when given targets.
        items = output if isinstance(output, tuple) else (output,)
        tensors = [t for t in items if isinstance(t, torch.Tensor)]
        losses = [t for t in tensors if t.dim() == 0]
        logits = [t for t in tensors if t.dim() > 0]
        if losses:
            self._loss = (_finite(logits[0]) if logits else None, _finite(losses[0]))

    def _after_optimizer(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        if self.finding is not None or self.step % self.every:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sums = torch.stack([p.detach().sum(dtype=torch.float32) for p in params])
        if bool(torch.isfinite(sums).all()):  # one host read
            return
        names = {id(p): n for n, p in self.model.named_parameters()}
        for p in params:  # exactly, now that one has gone wrong
            grad_ok = p.grad is None or bool(torch.isfinite(p.grad).all())
            if grad_ok and not bool(torch.isfinite(p).all()):
                name = names.get(id(p), "a parameter")
                self._found("optimizer", name, "its gradient was finite; the update was not")
                return

    # -- reading the flags: one host transfer per checked step ----------------------------

    def _check(self) -> None:
        self._pending = False
        flags: list[torch.Tensor | None] = [f for _, a, b in self._forward for f in (a, b)]
        flags += list(self._loss or ())
        flags += [f for _, a, b in self._backward for f in (a, b)]
        present = [f for f in flags if f is not None]
        values = iter(torch.isfinite(torch.stack(present)).cpu().tolist() if present else [])
        read = [True if f is None else next(values) for f in flags]
        n_forward, n_loss = 2 * len(self._forward), len(self._loss or ())
        forward, loss, backward = (
            read[:n_forward],
            read[n_forward : n_forward + n_loss],
            read[n_forward + n_loss :],
        )
        for i, (name, _, _) in enumerate(self._forward):
            if forward[2 * i] and not forward[2 * i + 1]:
                return self._found("forward", name, "its input was finite")
        if loss and loss[0] and not loss[1]:
            why = "the logits were finite; are all the targets ignored (-1)? then it is 0/0"
            return self._found("loss", "loss", why)
        for i, (name, _, _) in enumerate(self._backward):
            if backward[2 * i] and not backward[2 * i + 1]:
                return self._found("backward", name, "its grad_output was finite")
        return None

    def _found(self, phase: Phase, where: str, detail: str) -> None:
        self.finding = Finding(self.step, phase, where, detail)
        self.on_finding(self.finding, self.batch)
