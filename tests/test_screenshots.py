"""The documentation's screenshots stay true: each is taken again from the app and its text
compared with the committed SVG (text only, so fonts and colours do not matter).

When one fails because the app changed on purpose, look at the new picture and rewrite them
all with `python docs/screenshots.py`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "screenshots.py"


def load_script():
    spec = importlib.util.spec_from_file_location("docs_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshots = load_script()


def test_svg_text_reads_the_screen_line_by_line() -> None:
    svg = (
        '<text class="r1" x="0" y="44.4" textLength="24.4">a&#160;b</text>'
        '<text class="r2" x="24.4" y="44.4" textLength="12.2">&lt;c</text>'
        '<text class="r1" x="0" y="20" textLength="12.2">top</text>'
    )
    assert screenshots.svg_text(svg) == ["top", "a\xa0b<c"]


@pytest.mark.parametrize("name", list(screenshots.SHOTS))
async def test_the_committed_screenshot_is_what_the_app_shows(name: str) -> None:
    committed = screenshots.IMG / f"{name}.svg"
    assert committed.exists(), f"{committed} is missing: run python docs/screenshots.py"
    now = screenshots.svg_text(await screenshots.shoot(name))
    before = screenshots.svg_text(committed.read_text(encoding="utf-8"))
    assert now == before, (
        f"docs/img/{name}.svg is stale; look at the app and run python docs/screenshots.py"
    )
