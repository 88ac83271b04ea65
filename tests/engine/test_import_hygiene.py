"""The engine never imports the UI: textual, rich and gpt_tui.ui stay out of sys.modules."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import gpt_tui.engine

# One fresh interpreter imports the engine module by module and reports, after each, any
# UI package that has appeared; the first module that pulls one in is the one named.
SCRIPT = """
import importlib, json, sys
def ui():
    return sorted(m for m in sys.modules
                  if m.split('.')[0] in ('textual', 'rich') or m.startswith('gpt_tui.ui'))
report = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    new = [m for m in ui() if not any(m in v for v in report.values())]
    if new:
        report[name] = new
print(json.dumps(report))
"""


def engine_modules() -> list[str]:
    found = pkgutil.walk_packages(gpt_tui.engine.__path__, prefix="gpt_tui.engine.")
    return ["gpt_tui.engine"] + [m.name for m in found]


def test_engine_modules_import_no_ui() -> None:
    modules = engine_modules()
    assert "gpt_tui.engine.analysis.probes" in modules and "gpt_tui.engine.core.stepping" in modules
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *modules], capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {}, f"engine modules pulled in UI packages: {report}"
