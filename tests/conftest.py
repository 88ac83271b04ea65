import os
from pathlib import Path

import pytest

# Volatile numbers (process memory) are hidden so app snapshots are reproducible.
os.environ.setdefault("GPT_TUI_STABLE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"


@pytest.fixture
def shakespeare_path() -> Path:
    if not SHAKESPEARE.exists():
        pytest.skip(f"needs ../shared/data/tinyshakespeare.txt ({SHAKESPEARE} is absent)")
    return SHAKESPEARE


def pytest_configure(config):
    # Tests run two xdist workers on two cores; more torch threads per worker only contend.
    import torch

    torch.set_num_threads(1)
