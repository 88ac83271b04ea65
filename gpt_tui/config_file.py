"""The user's config file, `$XDG_CONFIG_HOME/gpt-tui/config.toml` (~/.config by default).

    theme = "nord"            # one of Textual's themes (the command palette sets it)
    device = "cuda"           # the app's default --device
    dtype = "bfloat16"        # the app's default --dtype
    export_dir = "~/exports"  # where E writes screenshots and tables (default: here)

    [keys]                    # an action's key(s), as Textual names them
    run = "R"
    step_over = "n,j"

A mistake in the file is one warning line naming the key and the file; everything else
in it still applies, and the app starts with the defaults for what was wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps|meta")
_TEXT_KEYS = ("theme", "device", "dtype", "export_dir")


@dataclass(frozen=True)
class AppConfig:
    theme: str | None = None
    device: str | None = None
    dtype: str | None = None
    export_dir: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # action id -> keys


def config_path() -> Path:
    """Where the config file is, whether or not it exists."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "gpt-tui" / "config.toml"


def load_config(
    path: Path | None = None,
    actions: frozenset[str] | None = None,
    default_keys: Mapping[str, str] | None = None,
) -> tuple[AppConfig, list[str]]:
    """The config and one warning line per mistake (the key and the file named); a missing
    file is the defaults. `actions`: the key ids `[keys]` may name (None: not checked);
    `default_keys`: each action's own key, which a rebound one must not take."""
    path = path or config_path()
    if tomllib is None:
        if not path.exists():
            return AppConfig(), []
        return AppConfig(), [f"{path}: reading it needs Python 3.11 or `pip install tomli`"]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AppConfig(), []
    except (OSError, UnicodeDecodeError) as err:
        return AppConfig(), [f"{path}: cannot read it ({err}); using the defaults"]
    except tomllib.TOMLDecodeError as err:
        return AppConfig(), [f"{path}: not valid TOML ({err}); using the defaults"]
    warnings: list[str] = []
    values: dict[str, object] = {}
    for key, value in data.items():
        problem = _check(key, value, actions)
        if problem is None:
            values[key] = value
        else:
            warnings.append(f"{path}: {key}: {problem}; ignored")
    keys = values.pop("keys", {})
    assert isinstance(keys, dict)
    good_keys = {}
    for action, binding in keys.items():
        if actions is not None and action not in actions:
            near = ", ".join(sorted(actions)[:6])
            warnings.append(f"{path}: keys.{action}: no such action (e.g. {near}); ignored")
        elif not isinstance(binding, str) or not binding.strip():
            warnings.append(f'{path}: keys.{action}: give the key as a string, e.g. "R"; ignored')
        else:
            good_keys[action] = binding
    warnings += _key_clashes(good_keys, default_keys or {}, path)
    return AppConfig(**values, keys=good_keys), warnings  # type: ignore[arg-type]


def _split_keys(binding: str) -> list[str]:
    return [k.strip() for k in binding.split(",") if k.strip()]


def _key_clashes(keys: dict[str, str], defaults: Mapping[str, str], path: Path) -> list[str]:
    """One key for two actions would leave one of them silently unreachable: a rebinding
    that shares a key with another action is ignored (both, when both are rebound), and
    said. Dropping one can free or take a default key, so this runs until nothing clashes."""
    warnings: list[str] = []
    while True:
        owners: dict[str, list[str]] = {}
        for action in sorted({*defaults, *keys}):
            for key in _split_keys(keys.get(action) or defaults.get(action, "")):
                owners.setdefault(key, []).append(action)
        clash = next(
            ((k, a) for k, a in owners.items() if len(a) > 1 and any(x in keys for x in a)),
            None,
        )
        if clash is None:
            return warnings
        key, actions = clash
        mine = [a for a in actions if a in keys]
        others = [a for a in actions if a not in keys]
        for action in mine:
            del keys[action]
        names = " and ".join(f"keys.{a}" for a in mine)
        if others:
            warnings.append(
                f"{path}: {names}: {key!r} is already the key of {others[0]}; ignored "
                f"(pick a free key, or rebind {others[0]} too)"
            )
        else:
            warnings.append(
                f"{path}: {names} both use {key!r}; both ignored (give each action its own key)"
            )


def theme_warning(theme: str | None, themes: Iterable[str], path: Path | str) -> str | None:
    """The warning for a theme the app does not have (`themes`: the ones it has)."""
    names = sorted(themes)
    if not theme or theme in names:
        return None
    shown = ", ".join(names[:6])
    return f"{path}: theme: {theme!r} is not a Textual theme ({shown}, …); the default is used"


def export_dir_problem(folder: Path, path: Path | str) -> str | None:
    """Why exports cannot be written to `folder` (the export_dir setting), with the fix."""
    if not folder.exists():
        why, fix = "does not exist", "create it"
    elif not folder.is_dir():
        why, fix = "is a file, not a folder", "name a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        why, fix = "is not writable", "make it writable"
    else:
        return None
    return f"export_dir {str(folder)!r} {why}: {fix}, or change export_dir in {path}"


def _check(key: str, value: object, actions: frozenset[str] | None) -> str | None:
    """What is wrong with one top-level entry, or None."""
    if key == "keys":
        return None if isinstance(value, dict) else 'should be a table: [keys] then run = "R"'
    if key not in _TEXT_KEYS:
        return f"unknown setting (known: {', '.join((*_TEXT_KEYS, 'keys'))})"
    if not isinstance(value, str):
        return f'should be a string, e.g. {key} = "..."'
    if key == "device" and not _DEVICE.fullmatch(value):
        return f"{value!r} is not a device (auto, cpu, cuda, cuda:N, mps, meta)"
    if key == "dtype" and value not in DTYPES:
        return f"{value!r} is not a dtype ({', '.join(DTYPES)})"
    return None


def write_atomically(path: Path, text: str) -> None:
    """A file the app writes (the config, an export): a temp file renamed over it."""
    from .io.checkpoints.save import atomic_write_text

    atomic_write_text(path, text)


def save_setting(key: str, value: str, path: Path | None = None) -> Path:
    """Set one top-level `key = "value"` in the file, keeping its other lines and comments;
    written atomically (a temp file renamed over it)."""
    path = path or config_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    entry = f"{key} = {_toml_string(value)}"
    pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
    table_start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), None)
    top = lines if table_start is None else lines[:table_start]
    found = next((i for i, line in enumerate(top) if pattern.match(line)), None)
    if found is not None:
        lines[found] = entry
    else:
        lines.insert(len(top) if table_start is None else table_start, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, "\n".join(lines) + "\n")
    return path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
