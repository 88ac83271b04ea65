"""The one object the app and the CLI talk to: a model on a device, its tokenizer, and
everything the engine computes about it.

`Session.open(ModelSpec(...))` builds or loads the model the command line asked for;
every problem with that request raises `SessionError` (or ConfigError / CheckpointError)
with one readable line. The session owns the hooks it adds and removes them on `close()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import GptTuiError
from ...io.paths import check_file
from ...models import DTYPES, build_model, make_config
from ...models.config import parse_overrides
from ...models.progress import OpenProgress as OpenProgress  # for the UI's type hints
from ...models.progress import ProgressFn
from ..analysis.interventions import Interventions
from ..analysis.lens import LensResult, logit_lens
from ..analysis.probe_points import find_probe_points
from ..analysis.probes import Probes
from ..analysis.summary import ModelSummary, summarize
from ..generation.sampling import Candidate, GenerationSession, check_token_ids, token_label
from .model_access import crop_to_context, last_position_logits, usable_vocab_size
from .stepping import ForwardStepper
from .trace import AttentionPattern, ProbeRecord


@dataclass(frozen=True)
class Trace:
    """One recorded forward pass, as plain data."""

    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]  # a printable label per input token
    records: tuple[ProbeRecord, ...]  # execution order; phase "out" (and "in" if asked)
    patterns: Mapping[int, AttentionPattern]  # the layers asked for, computed when looked at
    next_tokens: tuple[Candidate, ...]  # most likely next tokens at the last position
    note: str | None = None  # e.g. the prompt was cropped to the context


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


class SessionError(GptTuiError):
    """The model the user asked for cannot be opened; the message says why and what to do."""


DEFAULT_SAMPLE = "shakespeare-nanogpt"


def samples_dir() -> Path:
    """Where the shipped sample models live (override with GPT_TUI_SAMPLES)."""
    override = os.environ.get("GPT_TUI_SAMPLES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "sample_models"


def list_samples() -> list[Path]:
    root = samples_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class ModelSpec:
    """What the command line asked for. With none of config / checkpoint / sample given,
    the default sample model opens."""

    config: str | None = None
    arch: str | None = None
    overrides: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    meta: str | None = None
    sample: str | None = None
    model_file: str | None = None
    model_class: str | None = None
    config_class: str | None = None
    tokenizer: str | None = None  # a local tokenizer file or folder (--tokenizer)
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA if torch sees a GPU, else MPS, else CPU; explicit devices are checked."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SessionError(
            f"unknown --device {name!r}: use auto, cpu, cuda, cuda:N, mps or meta"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SessionError(
                f"--device {name}: torch sees no CUDA GPU here; use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SessionError(f"--device {name}: only {count} CUDA device(s), cuda:0..{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SessionError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "meta"):
        raise SessionError(f"--device {name}: use auto, cpu, cuda, cuda:N, mps or meta")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.strip().lower()]
    except KeyError:
        raise SessionError(f"unknown --dtype {name!r}: use float32, bfloat16 or float16") from None


@dataclass(frozen=True)
class OpenPlan:
    """What `check_spec` worked out: where the model comes from, and on what device."""

    kind: str  # "config", "checkpoint" or "sample"
    device: torch.device
    dtype: torch.dtype
    overrides: dict[str, str]
    path: Path | None = None


def check_spec(spec: ModelSpec) -> OpenPlan:
    """Every check that is quick (no weights read): the CLI runs it before the app starts,
    so a mistyped preset or path is one line on stderr, not a screen to quit."""
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype)
    overrides = parse_overrides(spec.overrides)
    given = [n for n in ("config", "checkpoint", "sample") if getattr(spec, n)]
    if len(given) > 1:
        raise SessionError(f"--{given[0]} and --{given[1]} both name a model; give only one")
    if spec.model_file and not spec.checkpoint:
        raise SessionError("--model-file needs --checkpoint with the weights to load into it")
    if overrides and spec.model_file:
        raise SessionError("--set does not apply to --model-file: the file's own config is used")
    if spec.meta:
        check_file(spec.meta, "--meta", "a meta.pkl", ("meta.pkl",), SessionError)
    if spec.model_file:
        py = ("model.py", "gpt.py", "nanochat/gpt.py")  # nanoGPT's, nanochat's, a checkout
        check_file(spec.model_file, "--model-file", "a .py file", py, SessionError)
    if spec.tokenizer and not Path(spec.tokenizer).expanduser().exists():  # a file or folder
        raise SessionError(f"--tokenizer {spec.tokenizer}: no such file or folder")
    if spec.config:
        make_config(spec.config, spec.arch, overrides)  # raises ConfigError
        return OpenPlan("config", device, dtype, overrides)
    if spec.checkpoint:
        path = Path(spec.checkpoint).expanduser()
        if not path.exists():
            raise SessionError(f"--checkpoint {spec.checkpoint}: no such file or folder")
        return OpenPlan("checkpoint", device, dtype, overrides, path)
    # No model named: the shipped sample of the asked family (nanoGPT by default).
    sample = spec.sample or (f"shakespeare-{spec.arch}" if spec.arch else DEFAULT_SAMPLE)
    path = samples_dir() / sample
    if not path.is_dir():
        names = ", ".join(p.name for p in list_samples()) or "none are installed"
        hint = "" if spec.sample else "; or open a random model with --config small"
        raise SessionError(f"no sample model {sample!r} (samples: {names}){hint}")
    return OpenPlan("sample", device, dtype, overrides, path)


class Session:
    """A model ready for inspection. Construct with `Session.open(spec)`."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        name: str,
        family: str,
        source: str,
        device: torch.device,
        dtype: torch.dtype,
        info: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.family = family
        self.source = source
        self.device = device
        self.dtype = dtype
        self.info = dict(info or {})
        self.notes = list(notes or [])
        self._summary: ModelSummary | None = None
        self._steppers: list[ForwardStepper] = []
        self._interventions: Interventions | None = None
        self.spec: ModelSpec | None = None  # what it was opened from (None: a live model)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, spec: ModelSpec, progress: ProgressFn | None = None) -> Session:
        """Open what `spec` names; `progress` hears each phase (see models/progress.py)."""
        plan = check_spec(spec)
        if plan.kind == "config":
            session = cls._from_config(spec, plan.overrides, plan.device, plan.dtype, progress)
        else:
            session = cls._from_checkpoint(
                plan.path, spec, plan.device, plan.dtype, plan.kind, progress
            )
        session.spec = spec
        return session

    @classmethod
    def _from_config(cls, spec, overrides, device, dtype, progress=None) -> Session:
        config = make_config(spec.config, spec.arch, overrides)
        model = build_model(config, device, dtype, seed=spec.seed, progress=progress)
        notes = []
        from ...io.tokenizers import SHAKESPEARE_CHARS, CharTokenizer, default_tokenizer

        if spec.tokenizer:
            from ...io.checkpoints.vocab import choose_tokenizer

            tokenizer = choose_tokenizer(config.vocab_size, [], spec.tokenizer, {})
        elif config.vocab_size == len(SHAKESPEARE_CHARS):
            tokenizer = CharTokenizer(list(SHAKESPEARE_CHARS))
        else:
            tokenizer = default_tokenizer(config)
            if getattr(tokenizer, "reason", ""):  # raw bytes: say why and how to get BPE
                notes.append(tokenizer.reason)
        if device.type == "meta":
            notes.append("meta device: shapes and parameter counts only, no values")
        return cls(
            model,
            tokenizer,
            name=spec.config or config.family,
            family=config.family,
            source="random init",
            device=device,
            dtype=dtype,
            notes=notes,
        )

    @classmethod
    def _from_checkpoint(cls, path: Path, spec, device, dtype, kind: str, progress=None) -> Session:
        from ...io.checkpoints import load_checkpoint

        if spec.model_file:
            from ...io.model_file import load_user_checkpoint

            loaded = load_user_checkpoint(
                spec.model_file,
                path,
                device=device,
                dtype=dtype,
                model_class=spec.model_class,
                config_class=spec.config_class,
                meta_path=spec.meta,
                tokenizer=spec.tokenizer,
            )
        else:
            loaded = load_checkpoint(
                path,
                device=device,
                dtype=dtype,
                meta_path=spec.meta,
                overrides=parse_overrides(spec.overrides),
                tokenizer=spec.tokenizer,
                progress=progress,
            )
        source = f"sample {path.name}" if kind == "sample" else f"checkpoint {path}"
        return cls(
            loaded.model,
            loaded.tokenizer,
            name=path.name or str(path),
            family=loaded.family,
            source=source,
            device=device,
            dtype=dtype,
            info={"format": loaded.format, **loaded.info},
            # What the loader had to guess or leave out is worth a line in the status bar.
            notes=[str(loaded.info[k]) for k in ("tokenizer_note", "note") if loaded.info.get(k)]
            + list(loaded.info.get("notes", [])),
        )

    # -- what the panes show -------------------------------------------------------------

    @property
    def tokenizer_note(self) -> str:
        """Which tokenizer reads text and why, when it is a guess or a fallback; else ""."""
        from ...io.checkpoints.vocab import tokenizer_note

        info = self.info
        return tokenizer_note(
            self.tokenizer, info.get("tokenizer_source"), str(info.get("tokenizer_note") or "")
        )

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def context_len(self) -> int | None:
        config = self.config
        for name in ("context_len", "block_size", "sequence_len"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return None

    def summary(self) -> ModelSummary:
        if self._summary is None:
            # The tree marks what the probes see (blocks, attention, MLP, ...) by kind.
            kinds = {p.name: p.kind for p in find_probe_points(self.model) if not p.virtual}
            self._summary = summarize(self.model, self.family, kinds)
        return self._summary

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def decode_token(self, i: int) -> str:
        """One token's text; "�" for an id the vocabulary lacks (a padded model's)."""
        return self.decode([i]) if 0 <= i < self.vocab_size else "�"

    def memory(self) -> dict[str, int]:
        """Bytes in use: CUDA allocated / peak on a CUDA device, else the process RSS."""
        if self.device.type == "cuda":
            return {
                "cuda_allocated": torch.cuda.memory_allocated(self.device),
                "cuda_peak": torch.cuda.max_memory_allocated(self.device),
            }
        import psutil

        return {"rss": psutil.Process().memory_info().rss}

    # -- forward passes ------------------------------------------------------------------

    def prompt_ids(self, prompt: str | Sequence[int]) -> tuple[list[int], str | None]:
        """Token ids of a prompt, cropped from the left to the context (the note says so)."""
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise SessionError("the prompt is empty: give at least one token")
        check_token_ids(ids, self.vocab_size, "prompt token id")
        return crop_to_context(ids, self.context_len)

    @property
    def vocab_size(self) -> int:
        """Ids a prompt may use: the tokenizer's, within the model's (maybe padded) vocabulary."""
        return usable_vocab_size(self.model, self.tokenizer)

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        self._require_weights()
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _require_weights(self) -> None:
        if self.device.type == "meta":
            raise SessionError(
                "the model is on the meta device (shapes only, no values); open it on cpu or cuda"
            )

    def trace(
        self,
        prompt: str | Sequence[int],
        attention_layers: Iterable[int] | str = (),
        leaves: bool = False,
    ) -> Trace:
        """One recorded forward pass: every probe in execution order, the patterns asked
        for, and the most likely next tokens. `leaves` also probes every Linear, norm and
        activation. On the meta device the pass runs too: shapes only, no values."""
        ids, note = self.prompt_ids(prompt)
        meta = self.device.type == "meta"
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        layers = () if meta else attention_layers
        with Probes(self.model, leaves=leaves, attention_layers=layers) as probes:
            logits = probes.run(idx)
            probes.flush()
            patterns = probes.patterns()
        candidates: tuple[Candidate, ...] = ()
        last = None if meta else last_position_logits(logits).float().cpu()
        if last is not None and not bool(torch.isfinite(last).all()):
            nan, inf = int(last.isnan().sum()), int(last.isinf().sum())
            note = _join(
                note,
                f"the logits at the last position are not finite ({nan} NaN, {inf} Inf of "
                f"{last.numel()}): no next token is ranked",
            )
        elif last is not None:
            probs = torch.softmax(last, dim=-1)
            top = torch.topk(probs, min(10, probs.numel()))
            candidates = tuple(
                Candidate(i, token_label(self.tokenizer, i), float(last[i]), float(p))
                for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
            )
        else:
            note = _join(note, "meta device: shapes only, no values")
        return Trace(
            prompt=prompt if isinstance(prompt, str) else self.decode(ids),
            token_ids=tuple(ids),
            tokens=tuple(token_label(self.tokenizer, i) for i in ids),
            records=tuple(probes.records),
            patterns=patterns,
            next_tokens=candidates,
            note=note,
        )

    def probe_names(self, leaves: bool = False) -> list[str]:
        """Every name a breakpoint glob can match, in module order."""
        return [p.name for p in find_probe_points(self.model, leaves=leaves)]

    def stepper(
        self,
        prompt: str | Sequence[int],
        *,
        breakpoints: Iterable[str] = (),
        watch_nonfinite: bool = False,
        attention_layers: Iterable[int] | str = (),
        leaves: bool = False,
        call: Callable[[], Any] | None = None,
    ) -> ForwardStepper:
        """A paused forward pass on the prompt, driven with step_into/over/out/continue_.
        `leaves` stops at every Linear, norm and activation too (so the NaN watchpoint
        names the exact layer); `call` replaces the forward (see `ForwardStepper`). The
        caller closes it (or the session does, on close)."""
        ids, _ = self.prompt_ids(prompt)
        stepper = ForwardStepper(
            self.model,
            self._tensor(ids),
            breakpoints=breakpoints,
            watch_nonfinite=watch_nonfinite,
            attention_layers=attention_layers,
            leaves=leaves,
            call=call,
        )
        self._steppers.append(stepper)
        return stepper

    def release(self, stepper: ForwardStepper) -> None:
        """Close a stepper from `stepper()` and forget it."""
        stepper.close()
        if stepper in self._steppers:
            self._steppers.remove(stepper)

    def generation(
        self,
        prompt: str | Sequence[int],
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> GenerationSession:
        self._require_weights()
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return GenerationSession(
            self.model,
            self.tokenizer,
            ids,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            context_len=self.context_len,
        )

    def lens(self, prompt: str | Sequence[int], position: int = -1, k: int = 10) -> LensResult:
        ids, _ = self.prompt_ids(prompt)
        self._require_weights()
        return logit_lens(self.model, self.tokenizer, ids, position=position, k=k)

    @property
    def interventions(self) -> Interventions:
        """Ablations and patches on the model; they apply to every pass until removed."""
        if self._interventions is None:
            self._interventions = Interventions(self.model)
        return self._interventions

    def close(self) -> None:
        """Remove every hook the session added and stop any paused forward pass."""
        for stepper in self._steppers:
            stepper.close()
        self._steppers.clear()
        if self._interventions is not None:
            self._interventions.clear()
