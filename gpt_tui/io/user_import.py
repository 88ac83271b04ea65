"""Importing a user's model file as it is, as Python would import it in their checkout.

A file alone is imported under a unique name with its folder on sys.path (for sibling
imports). A file inside a package (folders with `__init__.py`, or a namespace folder the
file's own imports name, as nanochat's `nanochat/gpt.py` does with `from nanochat.common
import ...`) is imported as that package's module, with the package's parent on sys.path,
whatever the current directory. What the user's code prints while it is imported and
built is captured (`captured_output`), so it cannot corrupt `--json` output.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import io
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from ..models.config import ConfigError


class ModelFileError(ConfigError):
    """The user's model file cannot be imported, searched or built. One readable line."""


def _module_name(path: Path) -> str:
    # Unique per file, so two users' `model.py` never share a sys.modules entry.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"gpt_tui_user_{path.stem}_{digest}"


def where(path: Path, exc: BaseException, folder: Path | None = None) -> str:
    """`file:line` of the deepest frame in the model's folder (its file, a sibling, or its
    package), else the file's path."""
    top = folder or path.parent
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).resolve().is_relative_to(top)
    ]
    if not frames:
        return str(path)
    return f"{frames[-1].filename}:{frames[-1].lineno}"


def _absolute_imports(path: Path) -> set[str]:
    """Module names the file imports absolutely (empty if it does not parse)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def package_of(path: Path) -> tuple[Path, str] | None:
    """(the folder to put on sys.path, the file's dotted module name) when the file lives in
    a package; None for a file on its own."""
    parts, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) > 1:
        return folder, ".".join(parts)
    imported = _absolute_imports(path)
    found, names, folder = None, [], path.parent
    for _ in range(3):  # namespace folders, named by the file's own imports
        if not folder.name.isidentifier():
            break
        names.insert(0, folder.name)
        dotted = ".".join(names)
        if any(m == dotted or m.startswith(dotted + ".") for m in imported):
            found = (folder.parent, f"{dotted}.{path.stem}")
        folder = folder.parent
    return found


def _install_packages(root: Path, dotted: str) -> None:
    """Import the packages above the file afresh from `root` itself, regular or namespace:
    a same-named package elsewhere on sys.path (installed, or met earlier) cannot shadow
    them, and an edited file is read again, as a standalone file is."""
    parts = dotted.split(".")[:-1]
    top = parts[0]
    for loaded in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[loaded]
    for i in range(1, len(parts) + 1):
        name, folder = ".".join(parts[:i]), root.joinpath(*parts[:i])
        init = folder / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(folder)]
            )
        else:
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if spec.loader is not None:
            spec.loader.exec_module(module)
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)


def _exec(path: Path, import_it, name: str, folder: Path) -> ModuleType:
    try:
        return import_it()
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ModelFileError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except ImportError as e:
        sys.modules.pop(name, None)
        raise ModelFileError(
            f"{where(path, e, folder)}: {e} (is it installed, or next to the model file?)"
        ) from None
    except SystemExit as e:  # not an Exception: it would end gpt-tui with the file's status
        sys.modules.pop(name, None)
        raise ModelFileError(
            f"{where(path, e, folder)}: the model file called sys.exit({e.code!r}) while "
            "importing; a model file should only define the model (guard scripts with "
            "if __name__ == '__main__':)"
        ) from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise ModelFileError(f"{where(path, e, folder)}: {type(e).__name__}: {e}") from None


def import_model_file(path: str | Path) -> ModuleType:
    """Import the file: as its package's module when it has one (see the module docstring),
    else as a fresh module with its folder on sys.path for sibling imports."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.suffix != ".py":
        raise ModelFileError(f"{path}: not a Python file (expected a .py model file)")
    package = package_of(path)
    if package is not None:
        root, dotted = package
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))  # for the checkout's other top-level modules
        importlib.invalidate_caches()

        def run() -> ModuleType:
            _install_packages(root, dotted)
            return importlib.import_module(dotted)

        return _exec(path, run, dotted, root / dotted.split(".")[0])
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs

    def run() -> ModuleType:
        spec.loader.exec_module(module)
        return module

    return _exec(path, run, name, path.parent)


@contextlib.contextmanager
def captured_output(notes: list[str], source: str) -> Iterator[None]:
    """Collect what Python code prints to stdout/stderr meanwhile as notes, one per line."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        seen = set(notes)
        for line in buffer.getvalue().splitlines():
            note = f"{source} printed: {line.strip()}"
            if line.strip() and note not in seen:
                seen.add(note)
                notes.append(note)
