"""A checkpoint whose vocabulary is missing or unreadable: every command that reads text
through the guessed tokenizer says which one it used and why, once, on stderr (and in the
notes of a --json output that has them); the model's own vocabulary brings no note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt_tui.cli import run
from gpt_tui.io.checkpoints import save_nanogpt_checkpoint
from gpt_tui.io.tokenizers import SHAKESPEARE_CHARS, CharTokenizer
from gpt_tui.models import build_model, make_config

TEXT = "ROMEO: What light through yonder window breaks?\nJULIET: Ay me!\n" * 20
GUESS = "tokenizer char, 65 tokens: no vocabulary found"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("vocab")
    tokenizer = CharTokenizer(list(SHAKESPEARE_CHARS))
    model = build_model(make_config("tiny", "nanogpt", {"vocab_size": tokenizer.vocab_size}))
    out = {}
    for name in ("own", "junk", "none"):
        save_nanogpt_checkpoint(
            base / name, model, iter_num=1, best_val_loss=1.0, tokenizer=tokenizer
        )
        out[name] = base / name
    (out["junk"] / "meta.pkl").write_text("junk\n")
    (out["none"] / "meta.pkl").unlink()
    (base / "text.txt").write_text(TEXT)
    return out


def _run(capsys, *args: str) -> tuple[str, str]:
    assert run(list(args)) == 0
    done = capsys.readouterr()
    return done.out, done.err


COMMANDS = {
    "trace": ["trace", "--prompt", "ROMEO:"],
    "generate": ["generate", "--prompt", "ROMEO:", "--steps", "2", "--seed", "0"],
    "step": ["step", "--prompt", "ROMEO:", "--break", "transformer.h.1.*"],
    "numerics": ["numerics", "--prompt", "ROMEO:"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_junk_meta_pkl_is_named_once_by_commands_reading_text(folders, capsys, command):
    _, err = _run(capsys, *COMMANDS[command], "--checkpoint", str(folders["junk"]))
    assert err.count("gpt-tui: note: ") == 1, err
    line = next(x for x in err.splitlines() if "note:" in x)
    assert GUESS in line and "meta.pkl not used: meta.pkl is not a readable pickle" in line


def test_no_meta_pkl_says_the_guess_and_the_own_vocabulary_says_nothing(folders, capsys):
    _, err = _run(capsys, *COMMANDS["trace"], "--checkpoint", str(folders["none"]))
    assert f"gpt-tui: note: {GUESS}: its 65 tokens are read as nanoGPT's" in err
    assert "meta.pkl not used" not in err
    _, err = _run(capsys, *COMMANDS["trace"], "--checkpoint", str(folders["own"]))
    assert "note:" not in err


def test_eval_and_train_step_say_it_and_json_carries_it(folders, capsys):
    data = str(folders["own"].parent / "text.txt")
    out, err = _run(capsys, "eval", "--data", data, "--checkpoint", str(folders["none"]))
    assert GUESS in err
    out, _ = _run(capsys, "eval", "--data", data, "--checkpoint", str(folders["none"]), "--json")
    assert json.loads(out)["tokenizer_note"].startswith(GUESS)
    args = ["train-step", "--data", data, "--block", "8", "--checkpoint", str(folders["junk"])]
    out, err = _run(capsys, *args, "--json")
    assert err.count(GUESS) == 1
    notes = json.loads(out)["notes"]
    assert any(GUESS in n and "meta.pkl not used" in n for n in notes), notes


def test_attribute_json_notes_carry_it(folders, capsys):
    args = ["attribute", "--prompt", "ROMEO:", "--answer", "a", "--json"]
    out, err = _run(capsys, *args, "--checkpoint", str(folders["none"]))
    assert GUESS in err and any(GUESS in n for n in json.loads(out)["notes"])


def test_a_bpe_sized_model_without_bpe_files_says_it_reads_raw_bytes(capsys, monkeypatch):
    import gpt_tui.io.tokenizers as tokenizers

    if tokenizers.gpt2_tokenizer() is not None:
        pytest.skip("GPT-2 BPE files are cached here: no fallback to raw bytes")
    _, err = _run(capsys, "trace", "--config", "gpt2", "--device", "meta", "--prompt", "Hello")
    assert "gpt-tui: note: tokenizer bytes, 50,257 tokens: GPT-2 BPE files are not" in err


def test_eval_names_the_file_with_characters_outside_the_vocabulary(folders, tmp_path, capsys):
    odd = tmp_path / "odd.txt"
    odd.write_text("ROMEO: café €\n" * 10)
    assert run(["eval", "--data", str(odd), "--checkpoint", str(folders["own"])]) == 2
    err = capsys.readouterr().err
    assert f"gpt-tui: error: --data {odd}: characters not in the model's 65-character" in err


def test_trace_generate_and_step_json_carry_it(folders, capsys):
    where = ["--checkpoint", str(folders["none"]), "--json"]
    for command in ("trace", "generate"):
        out, err = _run(capsys, *COMMANDS[command], *where)
        assert json.loads(out)["tokenizer_note"].startswith(GUESS) and GUESS in err
    out, _ = _run(capsys, "step", "--prompt", "ROMEO:", "--break-at", "MLP.forward", *where)
    assert any(GUESS in n for n in json.loads(out)["notes"])
    out, _ = _run(capsys, *COMMANDS["trace"], "--checkpoint", str(folders["own"]), "--json")
    assert json.loads(out)["tokenizer_note"] is None


def test_a_mistake_met_after_the_model_opens_is_still_one_line(folders, capsys) -> None:
    # The note is said once the command has run: a prompt the guessed vocabulary cannot
    # read stops it with the one line of the mistake alone.
    code = run(["trace", "--checkpoint", str(folders["none"]), "--prompt", "ROMEO: \u20ac"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("gpt-tui: error: ")
    assert GUESS not in err
