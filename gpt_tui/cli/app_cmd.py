"""The inspector app and its config file: the one CLI module that imports gpt_tui.ui."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import UserError, model_spec

if TYPE_CHECKING:
    from ..config_file import AppConfig
    from ..engine.core.session import ModelSpec
    from ..ui.app import GptTuiApp


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
    from ..ui.keys import ACTION_IDS, DEFAULT_KEYS

    config, warnings = load_config(actions=ACTION_IDS, default_keys=DEFAULT_KEYS)
    spec = with_config_defaults(model_spec(args), config)
    check_spec(spec)  # quick mistakes go to stderr with status 2, before the screen opens
    require_terminal(
        "gpt-tui (the inspector)",
        "in a script or a pipe use gpt-tui summary, trace or step; in a browser, gpt-tui serve",
    )
    setup = _prompt_setup(args.prompt) if getattr(args, "prompt", None) else None
    app = GptTuiApp(
        spec, setup=setup, config=config, config_warnings=warnings, config_file=config_path()
    )
    app.run()
    if app.open_error:  # the model could not be opened: said on the screen, and here
        print(f"gpt-tui: error: {app.open_error}", file=sys.stderr)
        return 2
    return app.return_code or 0


def require_terminal(what: str, instead: str) -> None:
    """The app reads keys from stdin and draws on stderr (Textual's terminal driver): without
    a terminal there it would draw into a pipe and wait for keys that never come. A driver
    named in TEXTUAL_DRIVER (`gpt-tui serve`'s web driver, which talks through pipes) needs
    none."""
    if os.environ.get("TEXTUAL_DRIVER") or all(map(_is_terminal, (sys.__stdin__, sys.__stderr__))):
        return
    raise UserError(
        f"{what} needs an interactive terminal (keys on stdin, the screen on stderr) and this "
        f"process has none: {instead}"
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return stream is not None and os.isatty(stream.fileno())
    except (OSError, ValueError):  # closed, or no file behind it
        return False


def _prompt_setup(prompt: str) -> Callable[[Any], None]:
    """The app opens on `--prompt` (as the commands do); `p` changes it once open."""
    from ..errors import GptTuiError

    def setup(debugger: Any) -> None:
        try:
            debugger.set_prompt(prompt)
        except GptTuiError as err:  # the model is still worth opening on its default prompt
            raise GptTuiError(f"--prompt: {err}") from None

    return setup


def cmd_config(args: argparse.Namespace) -> int:
    from textual.theme import BUILTIN_THEMES

    from ..config_file import config_path, export_dir_problem, load_config, theme_warning
    from ..ui.keys import ACTION_IDS, DEFAULT_KEYS

    path = config_path()
    if args.path:
        print(path)
        return 0
    config, warnings = load_config(path, actions=ACTION_IDS, default_keys=DEFAULT_KEYS)
    # What the app says as it starts, said here too: a bad theme, an export_dir E cannot use.
    folder = Path(config.export_dir).expanduser() if config.export_dir else None
    bad_dir = export_dir_problem(folder, path) if folder else None
    warnings += filter(None, [theme_warning(config.theme, BUILTIN_THEMES, path), bad_dir])
    print(f"{path}" + ("" if path.exists() else " (absent: the defaults apply)"))
    for key in ("theme", "device", "dtype", "export_dir"):
        value = getattr(config, key)
        print(f"  {key} = {value!r}" if value is not None else f"  {key}: default")
    for action, keys in sorted(config.keys.items()):
        print(f"  keys.{action} = {keys!r}")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def case_app(
    case: dict[str, Any],
    device: str = "cpu",
    *,
    meta: str | None = None,
    tokenizer: str | None = None,
    notice: str | None = None,
    on_open: Callable[[Any], None] | None = None,
) -> GptTuiApp:
    """`gpt-tui attach`'s app: the inspector on the copy of a live run's state that
    `gpt_tui.listen` wrote, the Train tab on the run's batch. `notice` (the run's health
    figures) is shown with the summary; `on_open(debugger)` runs once the copy is open."""
    import torch

    from ..engine.core.session import ModelSpec
    from ..engine.training.watch_case import (
        CaseError,
        case_batch,
        case_checkpoint,
        case_model_file,
        case_vocabulary,
    )
    from ..errors import GptTuiError
    from ..io.batches import FixedBatch
    from ..ui.app import GptTuiApp

    try:
        inputs = case_batch(case)
    except CaseError:  # the run saw no forward call since the attach asked: no batch
        inputs = []
    ids = [t for t in inputs if t.dtype == torch.long and t.dim() in (1, 2)]
    summary = case["summary"]

    def setup(debugger: Any) -> None:
        decode = debugger.session.decode_token
        try:
            if ids:
                x = ids[0] if ids[0].dim() == 2 else ids[0][None]
                debugger.set_prompt(debugger.session.decode(x[0].tolist()))
                if len(ids) > 1 and ids[1].shape == ids[0].shape:
                    y = ids[1] if ids[1].dim() == 2 else ids[1][None]
                    debugger.set_batch(FixedBatch(x, y, decode, f"the run's batch ({summary})"))
        except GptTuiError as err:  # the model is still worth opening without its batch
            app.call_from_thread(app.notify, f"the run's batch is not used: {err}", timeout=8)
        message = summary if notice is None else f"{summary}\n{notice}"
        app.call_from_thread(app.notify, message, title="attached", timeout=12)
        if on_open is not None:
            on_open(debugger)

    # the run's own model file: this user's code, which the run itself is running
    checkpoint, model_file = case_checkpoint(case), case_model_file(case, trust=True)
    if meta is None and tokenizer is None:  # the user's --meta / --tokenizer wins
        meta = case_vocabulary(case)
    spec = ModelSpec(
        checkpoint=checkpoint, model_file=model_file, device=device, meta=meta, tokenizer=tokenizer
    )
    app = GptTuiApp(spec, setup=setup)
    return app  # setup runs once the app is running, in its opening worker
