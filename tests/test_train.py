"""The tiny trainer: it learns, it is deterministic, and it resumes where it stopped."""

from __future__ import annotations

import torch

from gpt_tui.io.checkpoints import load_checkpoint
from gpt_tui.train import TrainSettings, train

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 40


def settings(tmp_path, name: str, arch: str = "nanogpt", steps: int = 40) -> TrainSettings:
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    ctx = {"block_size": 16} if arch == "nanogpt" else {"sequence_len": 16, "n_kv_head": 1}
    return TrainSettings(
        data=str(data),
        arch=arch,
        overrides=dict(n_layer=1, n_head=2, n_embd=16, **ctx),
        steps=steps,
        out=str(tmp_path / name),
        batch_size=8,
        eval_interval=20,
        eval_iters=4,
    )


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def test_training_lowers_the_loss(tmp_path):
    s = settings(tmp_path, "a", steps=120)
    result = train(s, progress=False)
    # A uniform guess over this text's characters costs ln(vocab) nats.
    vocab = len(set(TEXT))
    assert result["val_loss"] < 0.7 * torch.log(torch.tensor(float(vocab))).item()


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = settings(tmp_path, "straight")
    train(straight, progress=False)
    resumed = settings(tmp_path, "resumed")
    train(resumed, progress=False, stop_at=13)  # between saves: the stop itself must save
    train(resumed, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_nanochat_samples_are_written_in_nanochat_layout(tmp_path):
    s = settings(tmp_path, "chat", arch="nanochat", steps=20)
    train(s, progress=False)
    out = tmp_path / "chat"
    assert (out / "model_000020.pt").exists() and (out / "meta_000020.json").exists()
    loaded = load_checkpoint(out)
    assert loaded.family == "nanochat"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("To be")) == "To be"


def test_resumes_from_the_optim_pt_of_older_versions(tmp_path):
    s = settings(tmp_path, "old", steps=30)
    train(s, progress=False, stop_at=10)
    out = tmp_path / "old"
    (out / "optim_000010.pt").rename(out / "optim.pt")  # as gpt-tui named it before
    s.eval_interval = 5
    steps_seen = []
    train(s, progress=False, on_save=steps_seen.append)
    assert steps_seen == [15, 20, 25, 30]  # resumed at 10, not restarted from 0


def test_an_out_holding_another_family_is_refused_naming_the_way_to_resume(tmp_path):
    import pytest

    from gpt_tui.errors import GptTuiError
    from gpt_tui.train import TrainResumeError

    train(settings(tmp_path, "a", steps=2), progress=False)
    with pytest.raises(TrainResumeError) as err:
        train(settings(tmp_path, "a", arch="nanochat", steps=4), progress=False)
    assert isinstance(err.value, GptTuiError) and "\n" not in str(err.value)
    said = f"{tmp_path / 'a'} holds a mini nanogpt checkpoint (step 2); use --config mini --arch"
    said += " nanogpt --set"
    assert str(err.value).startswith(said)
    assert "--set n_layer=1" in str(err.value) and str(err.value).endswith("or another --out")
