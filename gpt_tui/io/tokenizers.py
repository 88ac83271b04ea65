"""Tokenizers: char-level (nanoGPT meta.pkl), GPT-2 BPE via tiktoken, and raw bytes."""

from __future__ import annotations

from dataclasses import dataclass


class TokenizerError(ValueError):
    """Text or ids the tokenizer cannot handle; the message says which and why."""


@dataclass
class CharTokenizer:
    """One token per character, ids in sorted character order (as nanoGPT's prepare.py)."""

    chars: list[str]
    name: str = "char"

    def __post_init__(self) -> None:
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted({ch for ch in text if ch not in self.stoi})
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:8])
            raise TokenizerError(
                f"characters not in the model's {self.vocab_size}-character vocabulary: {shown}"
            )
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(
                f"token id {bad[0]} is out of range for a vocabulary of {self.vocab_size}"
            )
        return "".join(self.chars[i] for i in ids)

    def to_meta(self) -> dict:
        """The dictionary nanoGPT's data/*/prepare.py pickles as meta.pkl."""
        return {
            "vocab_size": self.vocab_size,
            "itos": dict(enumerate(self.chars)),
            "stoi": self.stoi,
        }
