"""Opening with one copy of the weights: meta build + in-place init equals a direct build,
memory-mapped loading equals an ordinary load, and the progress events come in order."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from io_helpers import tiny_model

from gpt_tui.cli.open_progress import open_progress
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.io.checkpoints import load_checkpoint, save_nanochat_checkpoint
from gpt_tui.io.checkpoints import save_nanogpt_checkpoint as save_nanogpt
from gpt_tui.models import OpenProgress, build_model, make_config, model_class

CONFIGS = {
    "nanogpt": ("small", None, {}),
    "nanochat-extras": (
        "tiny",
        "nanochat",
        {"n_layer": 4, "resid_x0_lambdas": True, "smear": True, "backout": True}
        | {"value_embeds": True, "n_kv_head": 1},
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_meta_build_equals_a_direct_build_with_the_same_seed(name: str) -> None:
    preset, family, overrides = CONFIGS[name]
    config = make_config(preset, family, overrides)
    torch.manual_seed(0)
    direct = model_class(config)(config)  # built on the CPU, initialised as constructed
    built = build_model(config, "cpu", seed=0)
    expected, got = direct.state_dict(), built.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert dict(direct.named_buffers()).keys() == dict(built.named_buffers()).keys()
    for key, buffer in direct.named_buffers():
        assert torch.equal(buffer, built.get_buffer(key))
    if config.family == "nanogpt":
        assert built.lm_head.weight is built.transformer.wte.weight  # still tied


def phases(events: list[OpenProgress]) -> list[str]:
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.phase:
            out.append(e.phase)
    return out


def check_each_phase_counts_up_to_its_total(events: list[OpenProgress]) -> None:
    for phase in set(e.phase for e in events):
        mine = [e for e in events if e.phase == phase]
        assert [e.done for e in mine] == sorted(e.done for e in mine)
        assert mine[-1].done == mine[-1].total and len({e.total for e in mine}) == 1


def test_progress_of_a_random_init_in_order() -> None:
    events: list[OpenProgress] = []
    session = Session.open(ModelSpec(config="small", device="cpu"), progress=events.append)
    session.close()
    assert phases(events) == ["building", "initialising"]
    check_each_phase_counts_up_to_its_total(events)
    params = sum(p.numel() for p in session.model.parameters())
    assert events[-1] == OpenProgress("initialising", params, params, "parameters")


@pytest.mark.parametrize("family", ["nanogpt", "nanochat"])
def test_mmap_load_equals_an_ordinary_load_and_reports_its_phases(
    tmp_path: Path, family: str
) -> None:
    model = tiny_model(family, 30)
    if family == "nanogpt":
        path = save_nanogpt(tmp_path, model, iter_num=1, best_val_loss=1.0)
        ordinary = torch.load(path, map_location="cpu", weights_only=True)["model"]
    else:
        path = save_nanochat_checkpoint(tmp_path, model, step=1)
        ordinary = torch.load(path, map_location="cpu", weights_only=True)
    events: list[OpenProgress] = []
    loaded = load_checkpoint(path, progress=events.append)
    got = loaded.model.state_dict()
    for key, tensor in ordinary.items():
        if key in got:
            assert torch.equal(got[key], tensor), key
    assert set(got) - set(ordinary) <= {"lm_head.weight"}  # nanoGPT's tied head
    assert phases(events) == ["reading", "building", "moving to device"]
    check_each_phase_counts_up_to_its_total(events)
    size = path.stat().st_size
    assert events[0] == OpenProgress("reading", 0, size, "bytes")
    # Memory-mapped: the CPU weights are the file's pages, not a copy in the heap.
    weight = loaded.model.transformer.h[0].mlp.c_fc.weight
    assert mapped_file(weight.data_ptr()) == str(path)


def mapped_file(address: int) -> str | None:
    """The file mapped at `address` in this process (Linux's /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps to see memory mappings on this system")
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 else None
    return None


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_progress_draws_on_a_terminal_only() -> None:
    piped = io.StringIO()
    with open_progress(piped) as progress:
        assert progress is None
    screen = Terminal()
    with open_progress(screen) as progress:
        assert progress is not None
        progress(OpenProgress("reading", 5, 10, "bytes"))
        progress(OpenProgress("building", 1, 1))
    assert "reading" in screen.getvalue() and "building" in screen.getvalue()
    assert piped.getvalue() == ""


def test_the_cli_working_line_is_cut_to_one_line_of_the_terminal(monkeypatch) -> None:
    """The memory forecast's line wrapped at 80 columns and left its first half behind."""
    from gpt_tui.cli.open_progress import working

    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    message = "measuring 3 training steps of gpt2 on cpu " + "x" * 60 + " THE END"
    with working(message, screen):
        pass
    drawn = screen.getvalue()
    assert "measuring 3 training steps" in drawn and "…" in drawn
    assert "THE END" not in drawn
