"""Models for the compare, patching and attribution tests: our families, the user model
files of tests/fixtures/user_models loaded with the very same weights, and ports of those
files with one deliberate bug each, written where a test wants them."""

from __future__ import annotations

from pathlib import Path

import torch

from gpt_tui.io.model_file import load_model_file
from gpt_tui.models import build_model, make_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

# The fields each family's fixture file knows (ours add some the files do not have).
FILE_ARGS = {
    "nanogpt": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    ),
    "nanochat": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
}


# A user's port with one bug: (the fixture it copies, the line it changes, the bug).
PORTS = {
    "nanogpt_relu": ("model.py", "self.gelu = nn.GELU()", "self.gelu = nn.ReLU()"),
    "nanochat_relu": ("gpt.py", "F.relu(self.c_fc(x)).square()", "F.relu(self.c_fc(x))"),
    "nanochat_rope_base": ("gpt.py", "head_dim, base=10000)", "head_dim, base=1000)"),
    "nanochat_no_qk_norm": ("gpt.py", "q, k = norm(q), norm(k)", "pass  # no QK norm"),
}


def write_port(name: str, folder: Path) -> Path:
    """`folder/<name>.py`: the fixture with its one bug (each in a folder of its own, as a
    user's file would be)."""
    source, line, bug = PORTS[name]
    text = (FIXTURES / source).read_text()
    assert text.count(line) == 1, f"{source} no longer has {line!r} once"
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.py"
    path.write_text(text.replace(line, bug))
    return path


def ours(family: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """One of our tiny models, every weight random (nanochat's init zeroes some)."""
    args = {k: v for k, v in FILE_ARGS[family].items() if k not in ("dropout",)}
    model = build_model(make_config("tiny", family, {**args, **overrides}), "cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def user_copy(model: torch.nn.Module, file: str | Path) -> torch.nn.Module:
    """The model of `file` (a fixture's name, or a path), built from the family's arguments,
    with `model`'s weights."""
    family = model.config.family
    path = file if isinstance(file, Path) else FIXTURES / file
    found = load_model_file(path, model_args=FILE_ARGS[family])
    user = found.model_class(found.config_class(**FILE_ARGS[family])).eval()
    user.load_state_dict(model.state_dict())
    return user
