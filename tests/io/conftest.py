"""Fixtures for the io tests (helpers live in io_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from io_helpers import TEXT

from gpt_tui.io.tokenizers import CharTokenizer


@pytest.fixture
def char_tok() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that appears only if a hostile pickle's payload runs."""
    return tmp_path / "PAYLOAD_RAN"
