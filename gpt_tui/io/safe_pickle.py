"""Read pickles as plain data, never as code.

A pickle can name any importable callable (`os.system`, `builtins.exec`, ...) and have it
called while loading. nanoGPT's `meta.pkl` needs none of that: it is a dict of str and int.
So this unpickler resolves only a short allowlist of globals and refuses every other one
*before* anything is called, which means a refused pickle ran nothing.

nanochat's `tokenizer.pkl` pickles a `tiktoken.core.Encoding`. Its pickled form is the
class plus a state dict (name, pat_str, mergeable_ranks, special_tokens). Here the class
resolves to `EncodingState`, an inert holder of that dict, so no tiktoken code runs while
reading; the caller checks the dict and builds the Encoding itself (see tokenizers.py).
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import IO, Any

from ..errors import GptTuiError


class SafePickleError(GptTuiError):
    """A pickle could not be read as plain data. The message is one readable line."""


class UnsafePickleError(SafePickleError):
    """A pickle names a callable outside the allowlist; nothing from it was executed."""


class EncodingState:
    """Stands in for `tiktoken.core.Encoding` while unpickling: keeps its state, runs nothing."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"EncodingState({type(self.state).__name__})"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call (`_codecs.encode`) to rebuild bytes; latin-1 only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise SafePickleError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# (module, name) -> what it resolves to. Data constructors only: none of these can import,
# open files, evaluate strings or reach attributes of other objects.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): _latin1_encode,
    ("codecs", "encode"): _latin1_encode,
    ("tiktoken.core", "Encoding"): EncodingState,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` knows only `_ALLOWED`; `what` names the file."""

    def __init__(self, file: IO[bytes], what: str = "pickle") -> None:
        super().__init__(file)
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(refusal(self.what, f"{module}.{name}")) from None

    def persistent_load(self, pid: Any) -> Any:
        raise SafePickleError(
            f"{self.what} refers to external objects (a torch-style pickle?); not plain data"
        )


def refusal(what: str, global_name: str) -> str:
    """The one-line message for a pickle that names a forbidden callable."""
    return f"{what} wants to run code ({global_name}); refused — nothing from it was executed"


def loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle `data` through the allowlist. Raises SafePickleError / UnsafePickleError."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), what).load()
    except SafePickleError:
        raise
    except EOFError:
        raise SafePickleError(f"{what} is empty or cut short (truncated pickle)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise SafePickleError(f"{what} is not a readable pickle ({detail})") from None
    except (MemoryError, RecursionError):
        raise SafePickleError(f"{what} is too large or too deeply nested to read") from None


def load(path: str | Path, what: str | None = None) -> Any:
    """Unpickle the file at `path` through the allowlist."""
    path = Path(path)
    what = what or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SafePickleError(f"{path}: no such file") from None
    except IsADirectoryError:
        message = f"{path} is a folder, not a file: give the pickle file in it"
        raise SafePickleError(message) from None
    except OSError as e:
        raise SafePickleError(f"cannot read {path}: {e.strerror or e}") from None
    return loads(data, what)


def scan_globals(data: bytes) -> list[str]:
    """The callables a pickle names (`module.name`), found by reading opcodes, not running them.

    Used to explain why another loader refused a file. Best effort: [] if unparsable.
    """
    found: list[str] = []
    strings: list[str] = []  # recent string pushes, for STACK_GLOBAL's two operands
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                found.append(f"{module}.{name}")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - a damaged pickle simply has nothing more to report
        pass
    return list(dict.fromkeys(found))


def is_allowed(global_name: str) -> bool:
    module, _, name = global_name.rpartition(".")
    return (_PY2_MODULES.get(module, module), name) in _ALLOWED
