"""Host reads counted by benchmarks/syncs.py: one per probed forward, at most two per
watched training step, two per cached decode step (the logits, and the probes' stats)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from gpt_tui.models import build_model, make_config

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "syncs.py"
_SPEC = importlib.util.spec_from_file_location("bench_syncs", _PATH)
syncs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(syncs)


def model() -> torch.nn.Module:
    return build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)


def test_the_counter_sees_reads_of_device_values_and_not_of_host_copies() -> None:
    x = torch.randn(8)
    with syncs.SyncCounter() as counter:
        float(x.sum())  # a read outside gpt_tui: counted apart
        host = x.cpu()
        (host * 2).tolist()  # already on the host: no read
    assert (counter.count, counter.others) == (0, 2)


def test_one_read_per_probed_forward() -> None:
    counter = syncs.probed_forward(model())
    assert counter.count == 1, counter.sites
    assert next(iter(counter.sites)).startswith("cpu at gpt_tui/engine/core/stats.py")


def test_a_watched_step_reads_at_most_twice() -> None:
    counter = syncs.watched_step(model())
    assert counter.count <= 2, counter.sites


def test_a_cached_decode_step_reads_its_logits_and_its_stats_once_each() -> None:
    counter = syncs.decode_step(model())
    assert counter.count == 2, counter.sites
    sites = " ".join(counter.sites)
    assert "engine/generation/sampling.py" in sites and "engine/core/stats.py" in sites
