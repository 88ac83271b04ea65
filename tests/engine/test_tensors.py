"""The tensor viewer's data: a 2-D slice by fixed indices, norms, a histogram, a summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt_tui.engine.core.tensors import TensorViewError, one_line, view_tensor


def test_slice_by_fixed_indices_with_norms_and_histogram() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 3, 5, 4)
    view = view_tensor(t, fixed=(1, -1))
    assert view.fixed == (1, 2) and view.slice_shape == (5, 4)
    np.testing.assert_allclose(view.values, t[1, 2].numpy())
    np.testing.assert_allclose(view.row_norms, t[1, 2].norm(dim=1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(view.col_norms, t[1, 2].norm(dim=0).numpy(), rtol=1e-6)
    assert view.hist_counts.sum() == t.numel() and len(view.hist_edges) == 33
    assert view.hist_edges[0] == pytest.approx(t.min().item())
    assert view.hist_edges[-1] == pytest.approx(t.max().item())
    assert not view.values.flags.writeable


def test_the_window_is_bounded_and_norms_cover_the_whole_slice() -> None:
    t = torch.arange(40 * 3000, dtype=torch.float32).reshape(40, 3000)
    view = view_tensor(t, row_start=10, col_start=100, max_cells=6000)
    assert view.values.shape == (2, 2900) and view.values[0, 0] == t[10, 100]
    assert view.row_norms.shape == (40,) and view.col_norms.shape == (3000,)


def test_nonfinite_values_are_counted_not_binned() -> None:
    t = torch.tensor([[1.0, float("nan")], [float("inf"), 3.0]])
    view = view_tensor(t)
    assert view.hist_counts.sum() == 2
    assert np.isnan(view.values[0, 1])
    # The norms point at the row and column holding each: NaN wins over Inf.
    assert np.isnan(view.row_norms[0]) and np.isinf(view.row_norms[1])
    assert np.isinf(view.col_norms[0]) and np.isnan(view.col_norms[1])
    assert "NaN!1" in view.summary and "Inf!1" in view.summary


def test_one_line_summary() -> None:
    t = torch.zeros(1, 6, 32)
    t[0, 0, 0], t[0, 1, 1] = -2.0, 2.0
    assert (
        one_line(t) == "tensor[1, 6, 32] n=192 x∈[-2, 2] μ=0 σ=0.204 f32 cpu"
    )  # σ = sqrt(8 / 192)
    assert one_line(torch.tensor(3)) == "tensor[] n=1 3 i64 cpu"
    assert one_line(torch.ones(2, requires_grad=True)).endswith("f32 cpu grad")


@pytest.mark.parametrize("fixed,message", [((0, 0, 0), "at most 2"), ((5,), "out of range")])
def test_indices_that_do_not_fit_are_one_line(fixed, message) -> None:
    with pytest.raises(TensorViewError, match=message):
        view_tensor(torch.zeros(2, 3, 4, 5), fixed=fixed)
