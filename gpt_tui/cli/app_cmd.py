"""The inspector app: the one CLI module that imports gpt_tui.ui."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .common import model_spec

if TYPE_CHECKING:
    from ..ui.app import GptTuiApp


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


def case_app(
    case: dict[str, Any],
    device: str = "cpu",
    *,
    meta: str | None = None,
    tokenizer: str | None = None,
) -> GptTuiApp:
    """`gpt-tui attach`'s app: the inspector on the copy of a live run's state that
    `gpt_tui.listen` wrote, the Train tab on the run's batch."""
    import torch

    from ..engine.session import ModelSpec
    from ..engine.watch_report import CaseError, case_batch, case_checkpoint
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
        app.call_from_thread(app.notify, summary, title="attached", timeout=8)

    checkpoint, model_file = case_checkpoint(case), case.get("model_file")
    spec = ModelSpec(
        checkpoint=checkpoint, model_file=model_file, device=device, meta=meta, tokenizer=tokenizer
    )
    app = GptTuiApp(spec, setup=setup)
    return app  # setup runs once the app is running, in its opening worker
