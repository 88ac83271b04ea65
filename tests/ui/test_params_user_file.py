"""The Params tab's init view of a model from the user's own file: its rules are the
file's own (`init_weights`), so every row says unknown, and no std is painted as far from
an init gpt-tui cannot know."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ui_helpers import press, settle

from gpt_tui.engine.core.session import ModelSpec
from gpt_tui.io.model_file import import_model_file
from gpt_tui.ui.app import GptTuiApp
from gpt_tui.ui.widgets.param_table import ParamTable

REPO = Path(__file__).resolve().parents[2]
GPT_FILE = REPO / "tests" / "fixtures" / "nanochat_compute_dtype" / "nanochat" / "gpt.py"
ARGS = dict(sequence_len=16, vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


async def test_params_init_view_of_a_model_file_says_unknown_unflagged(tmp_path) -> None:
    module = import_model_file(GPT_FILE)
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(**ARGS))
    model.init_weights()  # its own rules: wte N(0, 0.8), lm_head N(0, 0.001), ...
    torch.save(model.state_dict(), tmp_path / "model_000001.pt")
    (tmp_path / "meta_000001.json").write_text(json.dumps({"step": 1, "model_config": ARGS}))

    spec = ModelSpec(model_file=str(GPT_FILE), checkpoint=str(tmp_path))
    app = GptTuiApp(spec, show_memory=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "2", "i")
        table = app.query_one(ParamTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        params = [r for r in rows if str(r[0]) != "mode" and str(r[2]) not in ("", "eval")]
        assert len(params) == len(list(model.parameters()))
        by_name = {str(r[0]): r for r in params}
        assert str(by_name["lm_head.weight"][2]) == "unknown"  # not nanochat's "zeros"
        for r in params:
            assert str(r[2]) == "unknown" and str(r[3]) == "set by gpt.py's own code"
            assert r[1].style != "yellow", str(r[0])  # nothing "far from its init"
