"""Snapshot tests of the main screens (SVGs in __snapshots__, looked at before committing).

Deterministic: a seeded tiny model, the memory figure hidden, no cursor blink in tests.
"""

from __future__ import annotations

import pytest
from ui_helpers import press, settle, tiny_app


def after(*keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await press(pilot, *keys)

    return run_before


def test_first_screen_80x24(snap_compare) -> None:
    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=after())


@pytest.mark.parametrize(
    "name, keys",
    [
        ("stats", ("r",)),
        ("params", ("2",)),
        ("attention", ("3", "down", "down", "right")),
        ("generate", ("g", "g", "g")),
        ("diagram", ("r", "5")),
        ("train", ("6",)),
        ("paused", ("down", "down", "b", "s", "s", "s")),
        ("help", ("question_mark",)),
    ],
)
def test_main_screens_100x30(snap_compare, name: str, keys: tuple[str, ...]) -> None:
    assert snap_compare(tiny_app(), terminal_size=(100, 30), run_before=after(*keys))


def test_nanochat_diagram(snap_compare) -> None:
    assert snap_compare(tiny_app("nanochat"), terminal_size=(100, 30), run_before=after("r", "5"))
