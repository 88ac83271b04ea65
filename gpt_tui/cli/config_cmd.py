"""`gpt-tui config`: where the config file is, and what it sets."""

from __future__ import annotations

import argparse


def cmd_config(args: argparse.Namespace) -> int:
    from ..config_file import config_path, load_config
    from ..ui.keys import ACTION_IDS

    path = config_path()
    if args.path:
        print(path)
        return 0
    config, warnings = load_config(path, actions=ACTION_IDS)
    print(f"{path}" + ("" if path.exists() else " (absent: the defaults apply)"))
    for key in ("theme", "device", "dtype", "export_dir"):
        value = getattr(config, key)
        print(f"  {key} = {value!r}" if value is not None else f"  {key}: default")
    for action, keys in sorted(config.keys.items()):
        print(f"  keys.{action} = {keys!r}")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0
