"""Host reads counted by benchmarks/syncs.py: one per probed forward, at most two per
watched training step, one per cached decode step (the logits, with the probes' stats
riding along)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from gpt_tui.engine.core import stats
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


def test_a_cached_decode_step_reads_its_logits_and_its_stats_in_one_transfer() -> None:
    counter = syncs.decode_step(model())
    assert counter.count == 1, counter.sites
    assert next(iter(counter.sites)).startswith("cpu at gpt_tui/engine/core/stats.py")


def test_a_laid_open_training_step_reads_once_per_phase() -> None:
    counter = syncs.laid_open_step(model())
    assert counter.count == 3, counter.sites
    assert counter.others > 0  # AdamW reads its step counts: torch's, counted apart


def test_stats_riding_along_with_a_copy_read_as_they_do_alone(monkeypatch) -> None:
    monkeypatch.setattr(stats, "FREE_READS", frozenset())  # the accelerator's path
    x, logits = torch.randn(4, 8), torch.randn(65)
    x[0, 0] = float("nan")
    rows, numels = [stats.stats_row(x), stats.stats_row(x * 2), None], [32, 32, 5]
    parcel = stats.Parcel(rows, numels).post()
    with syncs.SyncCounter() as counter:
        (host,) = stats.to_host(logits)
        rode = parcel.read()
    assert counter.count == 1, counter.sites
    assert torch.equal(host, logits)
    alone = stats.Parcel(rows, numels).read()
    assert repr(rode) == repr(alone)  # NaN stats compare unequal, their reprs do not
    assert rode[0].nan_count == 1 and rode[1].numel == 32 and rode[2].numel == 5
