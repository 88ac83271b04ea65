"""The inspector app and its config file: the one CLI module that imports gpt_tui.ui."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import model_spec

if TYPE_CHECKING:
    from ..config_file import AppConfig
    from ..engine.core.session import ModelSpec


def with_config_defaults(spec: ModelSpec, config: AppConfig) -> ModelSpec:
    """The config file's device and dtype where the command line left the defaults."""
    from dataclasses import replace

    device = config.device if spec.device == "auto" and config.device else spec.device
    dtype = config.dtype if spec.dtype == "float32" and config.dtype else spec.dtype
    return replace(spec, device=device, dtype=dtype)


def cmd_app(args: argparse.Namespace) -> int:
    from ..config_file import config_path, load_config
    from ..engine.core.session import check_spec
    from ..ui.app import GptTuiApp
    from ..ui.keys import ACTION_IDS

    config, warnings = load_config(actions=ACTION_IDS)
    spec = with_config_defaults(model_spec(args), config)
    check_spec(spec)  # quick mistakes go to stderr with status 2, before the screen opens
    app = GptTuiApp(spec, config=config, config_warnings=warnings, config_file=config_path())
    app.run()
    if app.open_error:  # the model could not be opened: said on the screen, and here
        print(f"gpt-tui: error: {app.open_error}", file=sys.stderr)
        return 2
    return app.return_code or 0


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
