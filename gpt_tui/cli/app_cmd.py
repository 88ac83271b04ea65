"""The inspector app: the one CLI module that imports gpt_tui.ui."""

from __future__ import annotations

import argparse
import sys

from .common import model_spec


def cmd_app(args: argparse.Namespace) -> int:
    from ..engine.session import check_spec
    from ..ui.app import GptTuiApp

    spec = model_spec(args)
    check_spec(spec)  # quick mistakes go to stderr with status 2, before the screen opens
    app = GptTuiApp(spec)
    app.run()
    if app.open_error:  # the model could not be opened: said on the screen, and here
        print(f"gpt-tui: error: {app.open_error}", file=sys.stderr)
        return 2
    return app.return_code or 0
