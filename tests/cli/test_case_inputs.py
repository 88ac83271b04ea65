"""Watch cases as untrusted input: `train-step --case` runs no code unless trusted, reads only
its own folder's files, and turns every damaged case into one line with exit status 2; the
writer makes each finding's case a whole set, and a report it cannot write never stops the
training run."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gpt_tui.cli import run
from gpt_tui.engine.training.watch import Finding
from gpt_tui.engine.training.watch_case import case_batch, read_case, replay_case
from gpt_tui.engine.training.watch_report import write_case
from gpt_tui.io.checkpoints.reading import torch_load
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

REPO = Path(__file__).resolve().parents[2]
USER_MODEL = REPO / "tests" / "fixtures" / "user_models" / "model.py"
FINDING = Finding(3, "forward", "transformer.h.1.mlp", "its input was finite")


class Payload:
    """Unpickling this creates a file: the proof that a pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def tiny_batch(vocab: int = 65, rows: int = 2, block: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(vocab, (rows, block), generator=g)
    return x, torch.randint(vocab, (rows, block), generator=g)


def nanogpt_case(root: Path, **kwargs) -> Path:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    written = write_case(root, model, FINDING, tiny_batch(), **kwargs)
    assert written.error is None and written.path is not None
    return written.path


def user_model_case(root: Path, source: Path) -> Path:
    """A case of a model from the user's own file (copied to `source`)."""
    shutil.copy(USER_MODEL, source)
    spec = importlib.util.spec_from_file_location(f"case_user_{os.getpid()}", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    config = module.GPTConfig(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    )
    written = write_case(root, module.GPT(config), FINDING, tiny_batch())
    assert written.path is not None, written.error
    return written.path


def train_step(*args: str, capsys) -> tuple[int, str, str]:
    code = run(["train-step", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert "weights_only=False" not in err


# -- trust ------------------------------------------------------------------------------------


def test_a_case_naming_a_model_file_runs_it_only_when_trusted(tmp_path, capsys):
    source = tmp_path / "their_model.py"
    user_model_case(tmp_path / "report", source)
    marker = tmp_path / "IMPORTED"
    source.write_text(source.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    case = read_case(tmp_path / "report")
    case_json = Path(case["folder"]) / "case.json"
    data = json.loads(case_json.read_text())
    data["model_file_sha256"] = __import__("hashlib").sha256(source.read_bytes()).hexdigest()
    case_json.write_text(json.dumps(data))

    code, _, err = train_step("--case", str(tmp_path / "report"), capsys=capsys)
    one_line(code, err, str(source), "--trust-case-code")
    assert not marker.exists()  # refused before anything was imported

    code, out, err = train_step(
        "--case", str(tmp_path / "report"), "--trust-case-code", "--json", capsys=capsys
    )
    assert code == 0, err
    assert marker.exists()


def test_a_model_file_changed_since_the_case_is_refused_even_when_trusted(tmp_path, capsys):
    source = tmp_path / "their_model.py"
    user_model_case(tmp_path / "report", source)
    marker = tmp_path / "IMPORTED"
    source.write_text(source.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    code, _, err = train_step(
        "--case", str(tmp_path / "report"), "--trust-case-code", capsys=capsys
    )
    one_line(code, err, str(source), "has changed since the case was written")
    assert not marker.exists()
    with pytest.raises(Exception, match="--trust-case-code"):
        replay_case(tmp_path / "report")


# -- the case keeps its vocabulary ------------------------------------------------------------


def test_the_case_keeps_its_vocabulary_and_shows_the_batch_decoded(tmp_path, capsys):
    chars = sorted(set("First Citizen:\nBefore we proceed any further, hear me speak.ABCDEFGHIJ"))
    chars = (chars + [chr(c) for c in range(0x100, 0x200) if chr(c) not in chars])[:65]
    meta = tmp_path / "meta.pkl"
    meta.write_bytes(pickle.dumps(CharTokenizer(chars).to_meta()))
    text = "First Citizen:\nBefore we pro"
    ids = torch.tensor([[chars.index(c) for c in text[:17]]])
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    written = write_case(tmp_path / "r", model, FINDING, (ids[:, :-1], ids[:, 1:]), meta=meta)
    case = read_case(tmp_path / "r")
    assert case["tokenizer"]["source"] == str(meta.resolve())
    assert len(case["tokenizer"]["sha256"]) == 64
    assert (written.path / "tokenizer.json").is_file()

    code, out, err = train_step("--case", str(tmp_path / "r"), capsys=capsys)
    assert code == 0, err
    assert "First Citizen:⏎B" in out and "records no vocabulary" not in out


def test_a_case_without_a_vocabulary_says_so_and_names_meta(tmp_path, capsys):
    nanogpt_case(tmp_path / "r")
    code, out, err = train_step("--case", str(tmp_path / "r"), capsys=capsys)
    assert code == 0, err
    assert "records no vocabulary" in out and "--meta" in out


def test_the_run_s_meta_pkl_is_found_where_nanogpt_reads_it(tmp_path, monkeypatch):
    (tmp_path / "data" / "shakespeare_char").mkdir(parents=True)
    chars = [chr(32 + i) for i in range(65)]
    meta = tmp_path / "data" / "shakespeare_char" / "meta.pkl"
    meta.write_bytes(pickle.dumps(CharTokenizer(chars).to_meta()))
    monkeypatch.chdir(tmp_path)
    nanogpt_case(tmp_path / "r")
    assert read_case(tmp_path / "r")["tokenizer"]["source"] == str(meta.resolve())


# -- a damaged or hostile case: one line, exit 2 ----------------------------------------------


def edit_case(folder: Path, **fields) -> None:
    path = folder / "case.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def whole_json(text: str):
    return lambda folder: (folder / "case.json").write_text(text)


def batch_of(obj):
    return lambda folder: torch.save(obj, folder / "batch.pt")


def empty_batch(folder: Path) -> None:
    (folder / "batch.pt").write_bytes(b"")


def hostile_batch(folder: Path) -> None:
    (folder / "batch.pt").write_bytes(pickle.dumps({"inputs": Payload(folder / "PAYLOAD_RAN")}))


DAMAGED = {
    "a list": (whole_json("[]"), "holds a list, not a case"),
    "an empty object": (whole_json("{}"), "has no 'checkpoint'"),
    "checkpoint 5": (lambda f: edit_case(f, checkpoint=5), "'checkpoint' is 5"),
    "model_file 7": (lambda f: edit_case(f, model_file=7), "'model_file' is 7"),
    "batch outside": (lambda f: edit_case(f, batch="/etc/passwd"), "outside the case folder"),
    "batch climbing out": (lambda f: edit_case(f, batch="../../x.pt"), "outside the case folder"),
    "0-byte batch.pt": (empty_batch, "empty (0 bytes)"),
    "batch.pt holding a list": (batch_of([1, 2]), "holds a list, not a case's batch"),
    "batch without targets": (batch_of({"inputs": [torch.zeros(1, 4).long()]}), "no targets"),
    "batch of floats": (batch_of({"inputs": [torch.zeros(1, 4)] * 2}), "token ids"),
    "batch longer than the context": (
        batch_of({"inputs": [torch.zeros(1, 200).long()] * 2}),
        "more than the model's context of 16",
    ),
    "malicious batch.pt": (hostile_batch, "refused — nothing from it was executed"),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_case_is_one_line_and_exit_2(tmp_path, capsys, name):
    folder = nanogpt_case(tmp_path / "report")
    damage, needle = DAMAGED[name]
    damage(folder)
    code, out, err = train_step("--case", str(tmp_path / "report"), capsys=capsys)
    one_line(code, err, needle)
    assert out == ""
    assert not (folder / "PAYLOAD_RAN").exists()


def test_latest_naming_a_folder_outside_the_report_is_refused(tmp_path, capsys):
    nanogpt_case(tmp_path / "report")
    (tmp_path / "report" / "latest").write_text("../elsewhere\n")
    code, _, err = train_step("--case", str(tmp_path / "report"), capsys=capsys)
    one_line(code, err, "not a case folder inside")


# -- writing: one finding's set, never a crash -------------------------------------------------


def test_each_finding_gets_its_own_folder_and_latest_names_the_newest(tmp_path):
    first = nanogpt_case(tmp_path / "r")
    second = nanogpt_case(tmp_path / "r")
    assert (first.name, second.name) == ("step3-forward-h.1.mlp", "step3-forward-h.1.mlp.2")
    assert read_case(tmp_path / "r")["folder"] == str(second)
    assert read_case(first)["folder"] == str(first)  # a case folder opens directly too
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "latest", "step3-forward-h.1.mlp", "step3-forward-h.1.mlp.2"
    ]  # fmt: skip


def test_a_report_under_a_regular_file_is_returned_as_an_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    written = write_case(tmp_path / "file" / "report", model, FINDING, tiny_batch())
    assert written.path is None
    assert "could not be written" in written.error and "Not a directory" in written.error


def test_a_watch_whose_report_cannot_be_written_prints_the_finding_and_goes_on(tmp_path):
    """on='report' keeps training; on='raise' raises the finding with the failure as a note."""
    script = textwrap.dedent(f"""
        import torch, gpt_tui
        from gpt_tui.models import build_model, make_config
        model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
        model.train()
        x = torch.zeros(1, 8, dtype=torch.long)
        for on in ("report", "raise"):
            with gpt_tui.watch(model, report={str(tmp_path / "file" / "r")!r}, on=on):
                for step in range(3):
                    _, loss = model(x, torch.full_like(x, -1))
                    try:
                        loss.backward()
                    except gpt_tui.NonFiniteError as err:
                        print("raised;", *getattr(err, "__notes__", []))
                    model.zero_grad()
            print("went on after", on, step)
    """)
    (tmp_path / "file").write_text("a regular file")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "went on after report 2" in result.stdout
    assert "raised; the case could not be written" in result.stdout
    assert result.stderr.count("the first non-finite value is in loss") == 2
    assert result.stderr.count("gpt-tui: warning: the case could not be written") == 2
    assert "Traceback" not in result.stderr


WRITER = """
import sys, torch
from gpt_tui.engine.training.watch import Finding
from gpt_tui.engine.training.watch_report import write_case
from gpt_tui.models import build_model, make_config

model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
step = int(sys.argv[2])
while True:  # until killed: each case's batch, weights and finding carry its step
    x = torch.full((2, 8), step % 65, dtype=torch.long)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float(step)
    finding = Finding(step, "backward", "transformer.h.0", "its grad_output was finite")
    written = write_case(sys.argv[1], model, finding, (x, x))
    print(step, written.error, flush=True)
    step += 1
"""


def check_consistent(report: Path) -> set[int]:
    """Every case folder in the report is one finding's set; returns their steps."""
    steps = set()
    for folder in sorted(p for p in report.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue  # a write cut short: never named by `latest`, never read
        case = read_case(folder)
        step = case["finding"]["step"]
        assert case["folder"] == str(folder) and case["finding"]["report"] == str(folder)
        assert int(case_batch(case)[0][0, 0]) == step % 65
        ckpt = torch_load(folder / case["checkpoint"])
        assert ckpt["iter_num"] == step
        assert float(ckpt["model"]["lm_head.weight"][0, 0]) == step
        steps.add(step)
    return steps


def test_a_kill_during_a_rewrite_leaves_only_whole_cases(tmp_path):
    report = tmp_path / "report"
    start = 0
    for writes in (1, 2, 3, 1):  # kill after N whole writes, inside the next one
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(report), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(writes):
            line = proc.stdout.readline()
            assert line.split()[1] == "None", line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        latest = read_case(report)
        assert latest["finding"]["step"] >= start + writes - 1
        steps = check_consistent(report)
        assert latest["finding"]["step"] == max(steps)
        start = max(steps) + 1
    assert len(steps) >= 7
    nanogpt_case(report)  # the next writer removes what the killed ones left half-written
    assert not [p for p in report.iterdir() if p.name.startswith(".")]


def test_a_watch_given_the_tokenizer_saves_it_and_the_batch_reads_as_text(tmp_path, capsys):
    import gpt_tui

    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    chars = sorted(set(text))
    model = build_model(make_config("tiny", "nanogpt", {"vocab_size": len(chars)}), "cpu")
    model.train()
    ids = torch.tensor([[chars.index(c) for c in text[:17]]])
    report = tmp_path / "report"
    with gpt_tui.watch(model, report=report, on="report", tokenizer=CharTokenizer(chars)):
        _, loss = model(ids[:, :-1], torch.full_like(ids[:, 1:], -1))  # 0/0: a NaN loss
        loss.backward()
    assert read_case(report)["tokenizer"]["source"] == "given to gpt_tui.watch"
    code, out, err = train_step("--case", str(report), capsys=capsys)
    assert code == 0, err
    assert "First Citizen:⏎B" in out
