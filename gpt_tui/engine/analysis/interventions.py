"""Interventions: change one part of the forward pass and see what follows.

Each intervention is a frozen spec naming a module by its PyTorch path; the `Interventions`
registry turns specs into hooks on the model and removes them by id. With no intervention
active the model has no hooks of ours left, so its logits are bit-identical to before.

- `HeadScale`: scale (0 = ablate) one attention head's slice of the attention output,
  i.e. the input columns h*hs:(h+1)*hs of the attention's output projection `c_proj`.
- `OutputScale`: scale (0 = ablate) any module's output, typically an MLP.
- `BlockScale`: scale one block's contribution to the residual stream:
  output := input + scale * (output - input).
- `ActivationPatch`: substitute a module's output recorded on another run
  (`record_activation`), at every position or at chosen ones.
- `InjectNonfinite`: write NaN or Inf into a module's output, to exercise the watchpoint.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from gpt_tui.engine.analysis.lens import find_blocks
from gpt_tui.engine.core.model_access import model_device

from ...errors import GptTuiError


class InterventionError(GptTuiError, ValueError):
    """An intervention names a module or head the model does not have."""


def get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at `path`, or an error that suggests the nearest real paths."""
    names = dict(model.named_modules())
    if path in names and path != "":
        return names[path]
    close = difflib.get_close_matches(path, list(names), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InterventionError(f"no module {path!r} in the model{hint}")


def _map_output(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply fn to a module's output tensor (or the first item of a tuple output)."""
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


def _scaled_slice(x: torch.Tensor, start: int, end: int, scale: float) -> torch.Tensor:
    """x with x[..., start:end] multiplied by scale, out of place (x * 1 is exact)."""
    factor = torch.ones(x.size(-1), dtype=x.dtype, device=x.device)
    factor[start:end] = scale
    return x * factor


@dataclass(frozen=True)
class InterventionSpec(ABC):
    """One intervention on the module at path `module`; `description` is what the UI lists."""

    module: str

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        """Validate against the model and register the hooks; returns their handles."""

    def __str__(self) -> str:
        return self.description


def _verb(scale: float, what: str) -> str:
    return f"ablate {what}" if scale == 0 else f"scale {what} by {scale:g}"


@dataclass(frozen=True)
class HeadScale(InterventionSpec):
    """Scale one head of the attention module `module` (0 = zero-ablate)."""

    head: int
    scale: float = 0.0

    @property
    def description(self) -> str:
        return _verb(self.scale, f"head {self.head} of {self.module}")

    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        attn = get_module(model, self.module)
        proj = getattr(attn, "c_proj", None)
        n_head = getattr(attn, "n_head", None)
        if not isinstance(proj, torch.nn.Linear) or not isinstance(n_head, int):
            raise InterventionError(
                f"{self.module} is not an attention module with heads "
                "(expected an `n_head` attribute and an output projection `c_proj`)"
            )
        if not 0 <= self.head < n_head:
            raise InterventionError(
                f"head {self.head} is out of range: {self.module} has {n_head} heads "
                f"(0-{n_head - 1})"
            )
        hs = proj.in_features // n_head
        start, end = self.head * hs, (self.head + 1) * hs

        def pre_hook(_module: torch.nn.Module, args: tuple) -> tuple:
            return (_scaled_slice(args[0], start, end, self.scale), *args[1:])

        return [proj.register_forward_pre_hook(pre_hook)]


@dataclass(frozen=True)
class OutputScale(InterventionSpec):
    """Scale a module's whole output (0 = zero-ablate), e.g. an MLP."""

    scale: float = 0.0

    @property
    def description(self) -> str:
        return _verb(self.scale, f"the output of {self.module}")

    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            return _map_output(output, lambda y: y * self.scale)

        return [get_module(model, self.module).register_forward_hook(hook)]


@dataclass(frozen=True)
class BlockScale(InterventionSpec):
    """Scale a residual block's contribution: output := input + scale * (output - input)."""

    scale: float = 0.0

    @property
    def description(self) -> str:
        return _verb(self.scale, f"the contribution of block {self.module}")

    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        blocks = [path for path, _ in find_blocks(model)]
        if self.module not in blocks:
            raise InterventionError(
                f"{self.module} is not a transformer block; blocks are {blocks[0]} to {blocks[-1]}"
            )

        def hook(_module: torch.nn.Module, args: tuple, output: Any) -> Any:
            x = args[0]
            if self.scale == 1:  # x + (y - x) rounds: leave the output untouched instead
                return output
            return _map_output(output, lambda y: x + self.scale * (y - x))

        return [get_module(model, self.module).register_forward_hook(hook)]


@dataclass(frozen=True, eq=False)
class ActivationPatch(InterventionSpec):
    """Replace a module's output by one recorded on another run (`record_activation`).

    With `positions`, only those positions (dim 1, the time axis) are replaced; the
    recorded activation must then cover them.
    """

    activation: torch.Tensor = field(repr=False)
    positions: tuple[int, ...] | None = None
    source: str = "another run"

    @property
    def description(self) -> str:
        where = "" if self.positions is None else f" at positions {list(self.positions)}"
        return f"patch {self.module} from {self.source}{where}"

    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        def patch(y: torch.Tensor) -> torch.Tensor:
            src = self.activation.to(device=y.device, dtype=y.dtype)
            if self.positions is None:
                if src.shape != y.shape:
                    raise InterventionError(
                        f"cannot patch {self.module}: the recorded activation has shape "
                        f"{tuple(src.shape)}, this run's output {tuple(y.shape)}"
                    )
                return src.clone()
            out = y.clone()
            pos = list(self.positions)
            out[:, pos] = src[:, pos]
            return out

        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            return _map_output(output, patch)

        return [get_module(model, self.module).register_forward_hook(hook)]


@dataclass(frozen=True)
class InjectNonfinite(InterventionSpec):
    """Overwrite a module's output with NaN or ±Inf at one position (None = everywhere)."""

    value: float = math.nan
    position: int | None = -1

    @property
    def description(self) -> str:
        where = "everywhere" if self.position is None else f"at position {self.position}"
        return f"inject {self.value} into the output of {self.module} {where}"

    def install(self, model: torch.nn.Module) -> list[RemovableHandle]:
        if math.isfinite(self.value):
            raise InterventionError(f"inject_nonfinite needs NaN or ±Inf, not {self.value}")

        def inject(y: torch.Tensor) -> torch.Tensor:
            out = y.clone()
            if self.position is None or out.dim() < 2:
                out.fill_(self.value)
            else:
                out[:, self.position] = self.value
            return out

        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            return _map_output(output, inject)

        return [get_module(model, self.module).register_forward_hook(hook)]


def inject_nonfinite(
    module_path: str, value: float = math.nan, position: int | None = -1
) -> InjectNonfinite:
    """The spec that puts NaN (or ±Inf) into `module_path`'s output, for the NaN watchpoint."""
    return InjectNonfinite(module_path, value, position)


@torch.inference_mode()
def record_activation(
    model: torch.nn.Module, module_path: str, ids: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """Run the model on ids and return a detached copy of `module_path`'s output.

    Active interventions apply to the recorded run too, so patches can be chained.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
        captured.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    idx = ids if isinstance(ids, torch.Tensor) else torch.tensor([list(ids)])
    handle = get_module(model, module_path).register_forward_hook(hook)
    try:
        model(idx.to(model_device(model)))
    finally:
        handle.remove()
    if not captured:
        raise InterventionError(f"{module_path} did not run in the forward pass")
    return captured[-1]


class Interventions:
    """The interventions active on one model, each removable by its id."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._next_id = 0
        self._specs: dict[int, InterventionSpec] = {}
        self._handles: dict[int, list[RemovableHandle]] = {}

    def add(self, spec: InterventionSpec) -> int:
        """Validate and activate `spec`; returns the id to remove it by."""
        handles = spec.install(self.model)
        ident = self._next_id
        self._next_id += 1
        self._specs[ident] = spec
        self._handles[ident] = handles
        return ident

    def remove(self, ident: int) -> InterventionSpec:
        """Deactivate one intervention; returns its spec."""
        if ident not in self._specs:
            raise InterventionError(f"no active intervention with id {ident}")
        for handle in self._handles.pop(ident):
            handle.remove()
        return self._specs.pop(ident)

    def clear(self) -> None:
        for ident in list(self._specs):
            self.remove(ident)

    @property
    def active(self) -> list[InterventionSpec]:
        """Active specs in the order they were added."""
        return list(self._specs.values())

    def items(self) -> list[tuple[int, InterventionSpec]]:
        """(id, spec) pairs in the order they were added, for a removable list."""
        return list(self._specs.items())

    def __enter__(self) -> Interventions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
