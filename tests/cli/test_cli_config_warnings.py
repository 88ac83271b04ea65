"""`gpt-tui config` says every mistake the app would meet: a theme it does not have, two
actions on one key, an export_dir that E cannot write to; each one line with its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gpt_tui.config_file import load_config
from gpt_tui.ui.keys import ACTION_IDS, DEFAULT_KEYS


def config(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "gpt-tui" / "config.toml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "config"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("warning: ")]


def test_a_theme_the_app_lacks_is_said_by_config(tmp_path: Path) -> None:
    (warning,) = config(tmp_path, 'theme = "nope"\n')
    assert "theme: 'nope' is not a Textual theme (" in warning and "the default is used" in warning
    assert config(tmp_path, 'theme = "nord"\n') == []


def test_two_actions_on_one_key_are_one_warning_and_both_refused(tmp_path: Path) -> None:
    (warning,) = config(tmp_path, '[keys]\nrun = "r"\nstep_into = "r"\n')
    assert "keys.run and keys.step_into both use 'r'; both ignored (give each" in warning
    file = tmp_path / "gpt-tui" / "config.toml"
    loaded, _ = load_config(file, actions=ACTION_IDS, default_keys=DEFAULT_KEYS)
    assert loaded.keys == {}  # run keeps r and step_into s: each still has a key


def test_a_key_taken_from_an_action_not_rebound_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('[keys]\nstep_into = "n"\nrun = "R"\nstep_out = "j,o"\n')
    loaded, warnings = load_config(file, actions=ACTION_IDS, default_keys=DEFAULT_KEYS)
    assert loaded.keys == {"run": "R", "step_out": "j,o"}
    assert warnings == [
        f"{file}: keys.step_into: 'n' is already the key of step_over; ignored "
        "(pick a free key, or rebind step_over too)"
    ]
    # a swap is no clash
    file.write_text('[keys]\nrun = "s"\nstep_into = "r"\n')
    loaded, warnings = load_config(file, actions=ACTION_IDS, default_keys=DEFAULT_KEYS)
    assert loaded.keys == {"run": "s", "step_into": "r"} and warnings == []


def test_an_export_dir_that_does_not_exist_is_named_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist" / "x"
    (warning,) = config(tmp_path, f'export_dir = "{missing}"\n')
    file = tmp_path / "gpt-tui" / "config.toml"
    assert warning == (
        f"warning: export_dir '{missing}' does not exist: create it, or change export_dir in {file}"
    )
    missing.mkdir(parents=True)
    assert config(tmp_path, f'export_dir = "{missing}"\n') == []


def test_an_export_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    file = tmp_path / "exports.txt"
    file.write_text("")
    (warning,) = config(tmp_path, f'export_dir = "{file}"\n')
    assert f"export_dir '{file}' is a file, not a folder: name a folder, or change" in warning
