"""The config file (theme, keys, bad entries), Y's OSC 52 copy and E's export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable
from ui_helpers import press, select, settle

from gpt_tui.config_file import AppConfig, config_path, load_config, save_setting
from gpt_tui.engine.core.session import ModelSpec
from gpt_tui.ui.app import GptTuiApp
from gpt_tui.ui.export import clipboard_note
from gpt_tui.ui.keys import ACTION_IDS


def app_with(tmp_path: Path, text: str) -> GptTuiApp:
    file = tmp_path / "gpt-tui" / "config.toml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    config, warnings = load_config(file, actions=ACTION_IDS)
    return GptTuiApp(
        ModelSpec(config="tiny"),
        show_memory=False,
        config=config,
        config_warnings=warnings,
        config_file=file,
    )


def test_the_path_follows_xdg_config_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "gpt-tui" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # the spec: absolute only
    assert config_path() == Path.home() / ".config" / "gpt-tui" / "config.toml"
    done = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "config", "--path"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "XDG_CONFIG_HOME": str(tmp_path)},
    )
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "gpt-tui" / "config.toml")


def test_each_mistake_is_one_line_naming_the_key_and_the_file(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text(
        'theme = 3\ndevice = "gpu"\ndtype = "bfloat16"\ncolour = 1\n[keys]\nfly = "f"\n'
    )
    config, warnings = load_config(file, actions=ACTION_IDS)
    assert config == AppConfig(dtype="bfloat16")  # the good entry still applies
    assert len(warnings) == 4
    for key, warning in zip(("theme", "device", "colour", "keys.fly"), warnings, strict=True):
        assert warning.startswith(f"{file}: {key}: ") and "\n" not in warning
    file.write_text("theme = [")
    config, warnings = load_config(file)
    assert config == AppConfig() and "not valid TOML" in warnings[0] and str(file) in warnings[0]


def test_save_setting_keeps_comments_and_tables(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('# mine\ndevice = "cpu"\n\n[keys]\nrun = "R"\n')
    save_setting("theme", "nord", file)
    save_setting("theme", "dracula", file)
    text = file.read_text()
    assert text.startswith("# mine\n") and text.count("theme =") == 1
    config, warnings = load_config(file)
    assert config == AppConfig(theme="dracula", device="cpu", keys={"run": "R"}) and not warnings
    assert not list(tmp_path.glob("*.tmp"))


async def test_theme_and_keys_apply_and_a_bad_entry_is_said_once(tmp_path: Path) -> None:
    app = app_with(tmp_path, 'theme = "nord"\n[keys]\nrun = "R"\nfly = "f"\n')
    notes: list[str] = []
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        notes = [n.message for n in app._notifications]
        assert app.theme == "nord"
        await press(pilot, "R")  # the rebound run key
        assert app.state.run is not None
    assert sum("keys.fly" in n for n in notes) == 1


async def test_a_theme_picked_later_is_kept_in_the_file(tmp_path: Path) -> None:
    app = app_with(tmp_path, "# my settings\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.theme = "gruvbox"  # what the palette's theme command does
        await settle(pilot)
    config, warnings = load_config(tmp_path / "gpt-tui" / "config.toml")
    assert config.theme == "gruvbox" and not warnings


async def test_y_copies_the_module_path_and_a_table_row(tmp_path: Path) -> None:
    app = app_with(tmp_path, "")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        select(app, "transformer.h.1.mlp")
        await press(pilot, "Y")
        assert app.clipboard == "transformer.h.1.mlp"
        await press(pilot, "2", "Y")
        table = app.query_one("#params-table", DataTable)
        first = [str(c) for c in table.get_row_at(0)]
        assert app.clipboard.split("\t")[:2] == first[:2]


def test_the_clipboard_note_names_tmux_and_ssh() -> None:
    assert clipboard_note({}) is None
    assert "OSC 52" in clipboard_note({"SSH_TTY": "/dev/pts/1"})
    note = clipboard_note({"TMUX": "/tmp/tmux-0/none,1,0"})
    assert note is None or "set-clipboard" in note


async def test_e_exports_the_screen_and_the_focused_table(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    app = app_with(tmp_path, f'export_dir = "{out}"\n')
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "2", "E")
        table = app.query_one("#params-table", DataTable)
        header = [str(c.label) for c in table.columns.values()]
        rows = table.row_count
    (svg,) = out.glob("gpt-tui-params-*.svg")
    assert svg.read_text().startswith("<svg")
    (csv_file,) = out.glob("*.csv")
    lines = list(csv.reader(csv_file.open()))
    assert header == ["name", "params", "share", "bytes", "shape"]  # on the screen
    assert lines[0] == [*header, "tied_with"] and len(lines) == rows + 1
    # The exported data is not the screen's text: full module paths, numbers as numbers.
    assert lines[1][:2] == ["transformer.wte.weight", "2080"] and lines[1][4] == "65x32"
    records = json.loads(next(out.glob("*.json")).read_text())
    assert len(records) == rows and records[0]["name"] == "transformer.wte.weight"
    assert records[0]["params"] == 2080 and records[0]["shape"] == [65, 32]
    assert isinstance(records[0]["share"], float) and isinstance(records[0]["bytes"], int)


async def test_e_exports_the_stats_with_full_names_and_numbers(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    app = app_with(tmp_path, f'export_dir = "{out}"\n')
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "r", "1")
        app.query_one("#stats-table", DataTable).focus()
        await press(pilot, "E")
        run = app.state.run
        shown = [str(row[0]) for row in map(app.query_one("#stats-table").get_row_at, [0, 2])]
    assert shown == ["wte", "h.0.resid_pre"]  # the screen keeps its short names
    records = json.loads(next(out.glob("gpt-tui-stats-*.json")).read_text())
    first = run.records[0]
    assert records[0]["name"] == first.name == "transformer.wte"
    assert records[0]["mean"] == first.stats.mean and records[0]["nan"] == 0
    assert records[2]["name"] == "transformer.h.0.resid_pre"
    lines = list(csv.reader(next(out.glob("gpt-tui-stats-*.csv")).open()))
    assert lines[0][:4] == ["name", "phase", "same_tensor_as", "shape"]
    assert lines[1][0] == "transformer.wte" and float(lines[1][6]) == first.stats.mean


async def test_e_into_a_missing_export_dir_names_the_setting_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist" / "x"
    app = app_with(tmp_path, f'export_dir = "{missing}"\n')
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "2", "E")
        notes = [n.message for n in app._notifications]
    file = tmp_path / "gpt-tui" / "config.toml"
    said = f"export failed: export_dir '{missing}' does not exist: create it, or change export_dir"
    assert [n for n in notes if n.startswith("export failed")] == [f"{said} in {file}"]
    assert not missing.exists()
