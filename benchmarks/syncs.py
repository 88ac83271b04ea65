"""Host-device syncs: how many reads back to the host one probed forward, one watched
training step and one cached decode step make, counted on the CPU.

On an accelerator every read of a device value (`.item()`, `float(t)`, `bool(t)`,
`.tolist()`, `.cpu()`, `.numpy()`, `nonzero`, ...) waits for the queued work to finish, so
the count matters more than the time on this CPU box. A `TorchFunctionMode` sees each of
these calls; `stats.FREE_READS` is emptied so the stats take the path they take on an
accelerator (on the CPU they read as they go, which is free there). Each count is printed
with its target, and the call sites (the first frame in gpt_tui) of every read beyond it.

Targets: 1 per probed forward (the pass's stats in one transfer), 1 per watched step (2
with the optimizer check), 1 per decode step (the token; the shown stats ride along).

Usage: python benchmarks/syncs.py [preset]   (default small)
Last line: syncs probed_forward=<n> (target 1) watched_step=<n> (target 2) decode_step=<n>
(target 1)
"""

from __future__ import annotations

import string
import sys
import traceback
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import gpt_tui
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core import stats
from gpt_tui.engine.generation.sampling import GenerationSession
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

# Tensor methods and torch functions whose result is a host value read from the tensor.
READS = {
    "item", "tolist", "numpy", "cpu", "nonzero", "argwhere", "masked_select", "unique",
    "__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__",
    "equal", "allclose", "is_nonzero",
}  # fmt: skip
_PACKAGE = str(Path(gpt_tui.__file__).resolve().parent)


def _to_host(func: Callable, args: tuple, kwargs: dict) -> bool:
    """`t.to("cpu")` (a copy to the host on an accelerator). A `torch.device` target is
    taken for another tensor's device (`t.to(x.device)`, no host copy there): on the CPU
    the two cannot be told apart, and the host is named by the string."""
    if getattr(func, "__name__", "") != "to":
        return False
    return any(
        isinstance(value, str) and torch.device(value).type == "cpu"
        for value in (*args[1:], kwargs.get("device"))
    )


class SyncCounter(TorchFunctionMode):
    """Counts host reads of device tensors made by gpt_tui, by call site (the innermost
    frame in gpt_tui). A tensor is on the host once `.cpu()` made it, or when an op made
    it from host tensors only (sampling on the copied logits reads nothing more); reads
    made by torch itself or the user's loop are counted apart (`others`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()
        self.others = 0
        self._host: dict[int, weakref.ref] = {}  # id -> the host tensor (ids are reused)

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = func(*args, **kwargs)
        inputs = [
            t
            for a in (*args, *kwargs.values())
            for t in (a if isinstance(a, (tuple, list)) else (a,))
            if isinstance(t, torch.Tensor)
        ]
        on_host = bool(inputs) and all(self._on_host(t) for t in inputs)
        to_host = name == "cpu" or _to_host(func, args, kwargs)
        if to_host or on_host:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self._host[id(t)] = weakref.ref(t)
        if (name in READS or to_host) and not on_host:
            site = self._site()
            if site is None:
                self.others += 1
            else:
                self.sites[f"{name} at {site}"] += 1
        return out

    def _on_host(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def _site(self) -> str | None:
        for frame in reversed(traceback.extract_stack()[:-2]):
            if frame.filename.startswith(_PACKAGE):
                where = Path(frame.filename).relative_to(Path(_PACKAGE).parent)
                return f"{where}:{frame.lineno} ({frame.name})"
        return None


def counted(fn: Callable[[], object]) -> SyncCounter:
    """Run `fn` with the accelerator's stats path, counting its host reads."""
    free, stats.FREE_READS = stats.FREE_READS, frozenset()
    try:
        with SyncCounter() as counter:
            fn()
    finally:
        stats.FREE_READS = free
    return counter


def probed_forward(model: torch.nn.Module) -> SyncCounter:
    T = min(64, model.config.block_size)
    idx = torch.randint(0, model.config.vocab_size, (1, T), generator=torch.Generator())
    with Probes(model) as probes:
        return counted(lambda: probes.run(idx))


def watched_step(model: torch.nn.Module) -> SyncCounter:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    T = min(32, model.config.block_size)
    x = torch.randint(model.config.vocab_size, (4, T), generator=gen)
    y = torch.randint(model.config.vocab_size, (4, T), generator=gen)

    def step() -> None:
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        with gpt_tui.watch(model, optimizer=optimizer, report=None):
            step()  # the first step sets up; the second is the steady state
            return counted(step)
    finally:
        model.eval()


def decode_step(model: torch.nn.Module) -> SyncCounter:
    tokenizer = CharTokenizer(sorted(set("\n !$&',-.3:;?" + string.ascii_letters)))
    prompt = tokenizer.encode("ROMEO:\nWhat light")[: model.config.block_size // 2]
    session = GenerationSession(model, tokenizer, prompt, seed=0, use_kv_cache=True)
    with Probes(model) as probes:

        def one() -> None:  # as the app takes a step: the step, then the probes' transfer
            session.step()
            probes.flush()

        one()  # the prefill
        return counted(one)


SCENARIOS: dict[str, tuple[Callable[[torch.nn.Module], SyncCounter], int]] = {
    "probed_forward": (probed_forward, 1),
    "watched_step": (watched_step, 2),
    "decode_step": (decode_step, 1),
}


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "small"
    model = build_model(make_config(preset, "nanogpt"), "cpu", seed=0)
    last = []
    for name, (scenario, target) in SCENARIOS.items():
        counter = scenario(model)
        print(
            f"{name}: {counter.count} host reads by gpt_tui (target {target}); "
            f"{counter.others} by torch or the loop itself"
        )
        if counter.count > target:
            for site, n in counter.sites.most_common():
                print(f"    {n:3d}  {site}")
        last.append(f"{name}={counter.count} (target {target})")
    print("syncs " + " ".join(last))


if __name__ == "__main__":
    main()
