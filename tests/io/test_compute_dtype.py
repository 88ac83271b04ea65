"""A model file's own COMPUTE_DTYPE (nanochat's) holds the pass's dtype during each pass of
the model it was set for, and is put back after: when the pass ends, raises or is cancelled."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from gpt_tui.io.compute_dtype import own_compute_dtype


@pytest.fixture
def user_module():
    module = types.ModuleType("user_gpt_for_compute_dtype")
    module.COMPUTE_DTYPE = torch.float32
    seen: list[torch.dtype] = []

    class Model(nn.Module):
        def forward(self, x):
            seen.append(module.COMPUTE_DTYPE)
            if x.sum() < 0:
                raise AssertionError("negative")
            if x.sum() > 100:
                raise KeyboardInterrupt  # a BaseException, as the runner's cancel
            return x

    Model.__module__ = module.__name__
    module.Model = Model
    sys.modules[module.__name__] = module
    yield module, Model, seen
    del sys.modules[module.__name__]


def test_each_pass_sees_its_own_dtype_and_the_global_comes_back(user_module):
    module, Model, seen = user_module
    a, b = Model(), Model()
    with own_compute_dtype(a, torch.bfloat16):
        a(torch.ones(1))
        b(torch.ones(1))  # another copy of the same class keeps the file's value
        assert module.COMPUTE_DTYPE is torch.float32
        with pytest.raises(AssertionError):
            a(-torch.ones(1))
        assert module.COMPUTE_DTYPE is torch.float32
    a(torch.ones(1))  # the hooks are gone
    assert seen == [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]


def test_a_cancelled_pass_puts_the_global_back(user_module):
    module, Model, _ = user_module
    m = Model()
    with pytest.raises(KeyboardInterrupt), own_compute_dtype(m, torch.float16):
        m(torch.full((1,), 1000.0))
    assert module.COMPUTE_DTYPE is torch.float32


def test_a_model_without_one_is_left_alone():
    m = nn.Linear(2, 2)
    with own_compute_dtype(m, torch.bfloat16):
        assert not m._forward_pre_hooks
