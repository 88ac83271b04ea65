"""Generation laid open: the same tokens as `generate`, and every step explained."""

from __future__ import annotations

import string

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.analysis.interventions import Interventions, inject_nonfinite
from gpt_tui.engine.generation.sampling import (
    GenerationError,
    GenerationSession,
    TokenOutOfRangeError,
    decode_ids,
    generate_steps,
    token_label,
)
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config
from gpt_tui.models.sampling import generate

CHARS = sorted(set("\n !$&',-.3:;?" + string.ascii_letters))  # shakespeare-char's 65


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    assert len(CHARS) == 65
    return CharTokenizer(CHARS)


@pytest.fixture(scope="module", params=["nanogpt", "nanochat"])
def model(request) -> torch.nn.Module:
    if request.param == "nanogpt":
        return build_model(make_config("tiny"), "cpu")
    return tiny_nanochat()


PROMPT = [1, 5, 9, 20]


def _generate(model, n, **kw) -> list[int]:
    out = generate(model, torch.tensor([PROMPT]), n, **kw)
    return out[0].tolist()


def test_greedy_equals_generate_and_temperature_zero_works(model, tok):
    session = GenerationSession(model, tok, PROMPT, temperature=0.0)
    steps = session.run(20)  # runs past the 16-token context: cache refills
    assert session.ids == _generate(model, 20, temperature=0.0)
    assert all(s.greedy for s in steps)
    assert all(s.token_id == s.candidates[0].token_id for s in steps)


@pytest.mark.parametrize("kw", [{}, {"top_k": 5}, {"top_p": 0.8, "temperature": 0.7}])
def test_seeded_run_equals_generate_and_replays(model, tok, kw):
    session = GenerationSession(model, tok, PROMPT, seed=123, **kw)
    session.run(16)
    first = session.ids
    assert first == _generate(model, 16, seed=123, **kw)
    session.reset()
    session.run(16)
    assert session.ids == first
    assert len(session.steps) == 16


def test_kv_cache_and_full_recomputation_give_the_same_tokens(model, tok):
    cached = GenerationSession(model, tok, PROMPT, seed=7)
    full = GenerationSession(model, tok, PROMPT, seed=7, use_kv_cache=False)
    cached.run(16)
    full.run(16)
    assert cached.ids == full.ids
    assert full.cache_fill is None
    assert full.steps[5].computed == len(PROMPT) + 5
    assert cached.steps[5].computed == 1
    assert cached.steps[5].cache_fill == (len(PROMPT) + 5, 16)  # the new token is not fed yet


def test_forced_token_is_appended_and_does_not_draw(model, tok):
    session = GenerationSession(model, tok, PROMPT, seed=3)
    session.step()
    step = session.step(force_token=42)
    assert step.forced and step.token_id == 42 and session.ids[-1] == 42
    assert step.token_label == tok.chars[42]
    after_forced = session.run(5)
    session.reset()
    session.step()
    session.step(force_token=42)
    assert [s.token_id for s in session.run(5)] == [s.token_id for s in after_forced]


def test_step_record_fields(model, tok):
    session = GenerationSession(model, tok, PROMPT, temperature=0.9, seed=1)
    step = session.step()
    assert (step.index, step.position, step.context_len) == (0, len(PROMPT), len(PROMPT))
    assert len(step.candidates) == 10
    probs = [c.prob for c in step.candidates]
    assert probs == sorted(probs, reverse=True)
    assert step.kept == 65 and step.note is None
    assert 0.0 < step.entropy <= torch.log(torch.tensor(65.0)).item() + 1e-6
    assert step.token_prob > 0
    assert session.text == tok.decode(session.ids)


def test_out_of_range_ids_are_clear_errors(model, tok):
    session = GenerationSession(model, tok, PROMPT)
    with pytest.raises(
        TokenOutOfRangeError, match=r"token id 70 is out of range: .*65 tokens \(0-64\)"
    ):
        session.step(force_token=70)
    with pytest.raises(TokenOutOfRangeError, match="prompt token id -1"):
        GenerationSession(model, tok, [3, -1])
    with pytest.raises(GenerationError, match="prompt is empty"):
        GenerationSession(model, tok, [])


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_settings_are_clear_errors(model, tok, kw, match):
    with pytest.raises(GenerationError, match=match):
        GenerationSession(model, tok, PROMPT, **kw)


def test_long_prompt_is_cropped_from_the_left_with_a_note(model, tok):
    prompt = list(range(20))  # the context is 16
    session = GenerationSession(model, tok, prompt, temperature=0.0)
    step = session.step()
    assert step.context_len == 16 and step.position == 20
    assert "cropped from the left to the last 16 tokens" in step.note
    assert session.ids[:20] == prompt
    out = generate(model, torch.tensor([prompt]), 1, temperature=0.0)
    assert session.ids == out[0].tolist()


@pytest.mark.parametrize("kw, allowed", [({"top_k": 3}, 3), ({"top_p": 0.3}, None)])
def test_filtering_shows_only_allowed_candidates(model, tok, kw, allowed):
    step = GenerationSession(model, tok, PROMPT, seed=0, **kw).step()
    if allowed is not None:
        assert step.kept == allowed
    assert len(step.candidates) == min(step.kept, 10)
    assert all(c.prob > 0 for c in step.candidates)
    assert sum(c.prob for c in step.candidates) == pytest.approx(1.0, abs=1e-5) or step.kept > 10
    assert step.token_id in {c.token_id for c in step.candidates}


def test_generate_steps_takes_text(model, tok):
    steps = generate_steps(model, tok, "Hello", 4, temperature=0.0)
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert steps[0].position == 5


class LastLogitsOnly(torch.nn.Module):
    """A user's model with no KV cache that returns only last-position logits (B, V)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner(idx)[0][:, -1, :]


def test_model_without_cache_or_config_falls_back_to_recomputation(tok):
    inner = build_model(make_config("tiny"), "cpu")
    session = GenerationSession(LastLogitsOnly(inner), tok, PROMPT, temperature=0.0, context_len=16)
    session.run(20)
    assert session.cache_fill is None
    assert session.ids == generate(inner, torch.tensor([PROMPT]), 20, temperature=0.0)[0].tolist()


def test_ids_beyond_the_tokenizer_still_show(tok):
    assert token_label(tok, 67) == "<67>"
    assert token_label(tok, 0) == tok.token_str(0)
    assert decode_ids(tok, [20, 67, 21, 22]) == "H<67>IJ"


class BareTokenizer:
    """A tokenizer with no `token_str`: labels fall back to the escaped decode."""

    vocab_size = 3

    def decode(self, ids: list[int]) -> str:
        return "".join("a\n\t"[i] for i in ids)


def test_labels_without_token_str():
    assert [token_label(BareTokenizer(), i) for i in range(3)] == ["a", "\\n", "\\t"]


def test_drop_cache_recomputes_and_a_failed_step_recovers(tok):
    model = build_model(make_config("tiny"), "cpu")
    session = GenerationSession(model, tok, PROMPT, temperature=0.0)
    session.run(3)
    session.drop_cache()
    assert session.step().computed == len(PROMPT) + 3
    with Interventions(model) as registry:
        registry.add(inject_nonfinite("transformer.h.0.mlp"))
        with pytest.raises(GenerationError, match="contain NaN or Inf"):
            session.step()
    session.run(8)  # the cache was dropped: the run continues as if nothing happened
    assert session.ids == _generate(model, 12, temperature=0.0)


@pytest.mark.parametrize("kw", [{}, {"top_k": 5, "temperature": 0.7}])
def test_peek_shows_the_next_step_without_changing_it(model, tok, kw):
    session = GenerationSession(model, tok, PROMPT, seed=11, **kw)
    session.run(3)
    candidates, kept = session.peek()
    assert session.steps[-1].index == 2  # peeking took no step
    replay = GenerationSession(model, tok, PROMPT, seed=11, **kw)
    replay.run(3)
    step = session.step()
    assert step.token_id == replay.step().token_id  # no draw from the generator
    assert kept == step.kept
    assert [c.token_id for c in candidates] == [c.token_id for c in step.candidates]
    # A full forward against the step's KV-cached one: equal up to float rounding.
    probs = [c.prob for c in step.candidates]
    assert [c.prob for c in candidates] == pytest.approx(probs, rel=1e-4, abs=1e-6)
