"""Statistics against a straightforward reference computation."""

from __future__ import annotations

import math

import pytest
import torch

from gpt_tui.engine.core.stats import rows_to_stats, stats_row, tensor_stats


def reference(x: torch.Tensor) -> dict[str, float]:
    x = x.double().flatten()
    finite = x[torch.isfinite(x)]
    return {
        "mean": finite.mean().item(),
        "std": finite.std(correction=0).item(),
        "rms": finite.square().mean().sqrt().item(),
        "min": finite.min().item(),
        "max": finite.max().item(),
        "abs_max": finite.abs().max().item(),
        "zero_frac": (x == 0).double().mean().item(),
        "nan_count": int(torch.isnan(x).sum()),
        "inf_count": int(torch.isinf(x).sum()),
        "numel": x.numel(),
    }


def assert_matches(stats, ref: dict[str, float]) -> None:
    for key, want in ref.items():
        assert getattr(stats, key) == pytest.approx(want, rel=1e-4, abs=1e-5), key


def test_plain_tensor_matches_reference() -> None:
    x = torch.randn(3, 17, 40) * 2.5 + 0.3
    x[0, 0, :7] = 0.0
    assert_matches(tensor_stats(x), reference(x))


@pytest.mark.parametrize("device_path", ["cpu-fast", "finite-path"])
def test_nan_and_inf_are_counted_and_left_out_of_moments(device_path: str) -> None:
    x = torch.randn(4, 50)
    x[0, :3] = float("nan")
    x[1, 5] = float("inf")
    x[2, 9] = -float("inf")
    if device_path == "finite-path":  # what accelerators always run
        from gpt_tui.engine.core import stats

        row = stats._finite_row(x)
        s = rows_to_stats([row], [x.numel()])[0]
    else:
        s = tensor_stats(x)
    assert (s.nan_count, s.inf_count) == (3, 2)
    assert not s.finite
    assert_matches(s, reference(x))


def test_low_precision_is_measured_in_fp32() -> None:
    x = torch.randn(64, 64).to(torch.bfloat16)
    assert_matches(tensor_stats(x), reference(x.float()))


def test_all_nan_gives_nan_moments_and_counts() -> None:
    s = tensor_stats(torch.full((5,), float("nan")))
    assert s.nan_count == 5 and math.isnan(s.mean) and math.isnan(s.max)


def test_meta_and_empty_tensors() -> None:
    assert stats_row(torch.empty(2, 3, device="meta")) is None
    s = rows_to_stats([None], [6])[0]
    assert s.numel == 6 and math.isnan(s.mean)
    assert tensor_stats(torch.empty(0)).numel == 0


def test_many_rows_one_batch_keep_their_order() -> None:
    xs = [torch.randn(10) + i for i in range(5)]
    stats = rows_to_stats([stats_row(x) for x in xs], [x.numel() for x in xs])
    assert [round(s.mean) for s in stats] == [round(x.mean().item()) for x in xs]


def test_a_pass_of_small_and_large_tensors_is_read_in_one_batch_with_the_same_stats() -> None:
    """Small CPU tensors' rows are made together at the transfer; a non-finite one, a
    signed zero and a large tensor among them keep their own exact meaning."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, 1, 384, generator=gen) * (i + 1) for i in range(6)]
    xs[1][0, 0, :5] = -0.0
    xs[2][0, 0, 3] = float("nan")
    xs[3][0, 0, 4] = float("-inf")
    xs.append(torch.randn(1, 64, 1024, generator=gen))  # beyond the small-tensor size
    xs.append(torch.full((7,), float("nan")))
    stats = rows_to_stats([stats_row(x) for x in xs], [x.numel() for x in xs])
    for x, st in zip(xs[:-1], stats, strict=False):
        assert_matches(st, reference(x))
    last = stats[-1]
    assert (last.nan_count, last.numel) == (7, 7) and math.isnan(last.mean)


@pytest.mark.parametrize("size", [2, 5000, 100_000])  # the host batch, numpy, torch on cpu
@pytest.mark.parametrize("path", ["cpu", "accelerator"])
def test_values_near_float32s_limit_give_their_mean_not_inf(
    size: int, path: str, monkeypatch
) -> None:
    # Activations growing towards overflow are what a user hunting the first inf looks
    # at: the sum of two 3e38 values is past float32's range, their mean is not.
    from gpt_tui.engine.core import stats

    if path == "accelerator":  # every row made and read the way a GPU's is
        monkeypatch.setattr(stats, "FREE_READS", frozenset())
    x = torch.full((size,), 3e38)
    x[0] = -1e38
    s = tensor_stats(x)
    assert s.finite and math.isfinite(s.mean) and math.isfinite(s.rms)
    assert_matches(s, reference(x))


def test_a_device_without_float64_reads_its_float32_rows(monkeypatch) -> None:
    from gpt_tui.engine.core import stats

    monkeypatch.setattr(stats, "FREE_READS", frozenset())
    monkeypatch.setattr(stats, "NO_FLOAT64", frozenset({"cpu"}))  # the rows MPS makes
    x = torch.randn(3, 70) * 4 + 1
    x[0, 0] = float("nan")
    assert_matches(tensor_stats(x), reference(x))
    assert math.isinf(tensor_stats(torch.full((4,), 3e38)).mean)  # float32 sums, as said
