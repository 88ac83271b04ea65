"""Fixtures for the app's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["nanogpt", "nanochat"])
def arch(request) -> str:
    return request.param
