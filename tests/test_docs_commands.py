"""Every command shown in the README and docs/ runs, exits 0 and prints what the page shows.

A checked example is a fenced block with the info string `console`:

    ```console
    $ gpt-tui eval --checkpoint out/ckpt.pt \\
          --data tinyshakespeare.txt
    ...
      loss 3.6196 nats/token, 5.2220 bits/char
    ```

- A line starting with `$ ` is a command (a trailing backslash continues it on the next line);
  the lines after it, up to the next command, are its expected standard output.
- A line that is just `...` stands for any number of lines (none included).
- Lines compare with their runs of spaces collapsed, so column widths do not matter, and a
  rule (`────`) of any length matches one of any other.
- A word starting with `~` (`~2,395`, `~340M`) stands for a number that varies from run to run
  (speed, memory, an address): it matches any word holding a digit.

The commands of one block run in order, in one fresh folder that holds links to this checkout's
`sample_models/`, `tests/`, `gpt_tui/`, `examples/` and, where it exists,
`../shared/data/tinyshakespeare.txt` (or the file `GPT_TUI_SHAKESPEARE` names); a block that
uses it skips without it. `gpt-tui` and `python` are this interpreter running this checkout,
on one torch thread (the pages' numbers were taken so), unbuffered (so `2>&1` keeps the order
a terminal shows). A command must exit 0: write `|| echo "exit $?"` after one that should not.
Show long-running commands in plain (unmarked) blocks.

`python tests/test_docs_commands.py PAGE.md` prints what each block's commands print now.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHAKESPEARE = Path(
    os.environ.get("GPT_TUI_SHAKESPEARE", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
)
LINKED = ("sample_models", "tests", "gpt_tui", "examples")
ELLIPSIS = "..."


@dataclass(frozen=True)
class Command:
    line: int  # where it starts in its page
    text: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    commands: tuple[Command, ...]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start, i = i + 1, i + 1
        commands: list[Command] = []
        while i < len(lines) and lines[i].strip() != "```":
            if not lines[i].startswith("$ "):
                raise ValueError(f"{page.name}:{i + 1}: output before the block's first command")
            first, text = i + 1, lines[i][2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            i += 1
            expected = []
            while i < len(lines) and lines[i].strip() != "```" and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            commands.append(Command(first, text, tuple(expected)))
        blocks.append(Block(page, start, tuple(commands)))
        i += 1
    return blocks


def normalise(line: str) -> str:
    return re.sub(r"─{2,}", "──", " ".join(line.split()))


def line_pattern(expected: str) -> re.Pattern[str]:
    words = normalise(expected).split(" ")
    parts = [r"\S*\d\S*" if w.startswith("~") and len(w) > 1 else re.escape(w) for w in words]
    return re.compile(" ".join(parts))


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether the actual lines fit the expected ones, `...` standing for any run of lines."""
    if not expected:
        return not actual
    head = expected[0]
    if head.strip() == ELLIPSIS:
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return (
        bool(actual)
        and line_pattern(head).fullmatch(normalise(actual[0])) is not None
        and matches(expected[1:], actual[1:])
    )


def test_the_matching_rules_hold() -> None:
    expected = ["step loss tok/s", "...", "   0  2.1253  ~668", "── text ──"]
    shown = ["step  loss  tok/s", "x", "y", "0 2.1253 1,204", "───────── text ────"]
    assert matches(expected, shown)
    assert not matches(expected, ["step loss tok/s", "0 2.1254 1,204", "── text ──"])
    assert not matches(expected, ["step loss tok/s", "0 2.1253 fast", "── text ──"])
    assert not matches(["a"], ["a", "b"])  # output the page does not show fails too
    assert matches(["a", "..."], ["a", "b"])


def block_needs(block: Block) -> str | None:
    """Why the block cannot run here, or None."""
    text = "\n".join(c.text for c in block.commands)
    if "tinyshakespeare.txt" in text and not SHAKESPEARE.exists():
        return f"needs ../shared/data/tinyshakespeare.txt ({SHAKESPEARE} is absent)"
    return None


def workdir(tmp: Path) -> dict[str, str]:
    """Fill `tmp` with what the commands refer to; return their environment."""
    for name in LINKED:
        (tmp / name).symlink_to(ROOT / name)
    if SHAKESPEARE.exists():
        (tmp / "tinyshakespeare.txt").symlink_to(SHAKESPEARE)
    bin_dir = tmp / ".bin"
    bin_dir.mkdir()
    for name, run_it in (("python", ""), ("gpt-tui", " -m gpt_tui")):
        shim = bin_dir / name  # a script, not a link: a venv's python finds its venv by path
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{run_it} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "GPT_TUI_DEBUG")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # two test workers on two cores; and the pages' numbers
    env["PYTHONUNBUFFERED"] = "1"  # `2>&1` keeps the order a terminal shows
    return env


def run(command: Command, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command.text],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


BLOCKS = [block for page in PAGES for block in parse_blocks(page)]


def test_the_pages_have_checked_examples() -> None:
    pages = {block.page.name for block in BLOCKS}
    assert "README.md" in pages and len(pages) >= 5, pages


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_the_page_shows_what_the_command_prints(block: Block, tmp_path: Path) -> None:
    reason = block_needs(block)
    if reason:
        pytest.skip(reason)
    env = workdir(tmp_path)
    for command in block.commands:
        done = run(command, tmp_path, env)
        where = f"{block.page.relative_to(ROOT)}:{command.line}: $ {command.text}"
        assert done.returncode == 0, f"{where}\nexit {done.returncode}\n{done.stderr[-2000:]}"
        shown = matches(list(command.expected), done.stdout.splitlines())
        assert shown, f"{where}\nprinted:\n{done.stdout}\nthe page shows:\n" + "\n".join(
            command.expected
        )


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's ids for a page's headings: lower case, punctuation dropped, spaces to -."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that resolve to nothing: {broken}"


def test_the_reference_lists_every_command() -> None:
    from gpt_tui.cli.parser import COMMANDS

    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    missing = [name for name in COMMANDS if f"| `gpt-tui {name}" not in text]
    assert not missing, f"docs/reference.md's commands table lacks {missing}"


if __name__ == "__main__":  # print what each block of a page prints now
    import tempfile

    for block in parse_blocks(Path(sys.argv[1]).resolve()):
        with tempfile.TemporaryDirectory() as tmp:
            env = workdir(Path(tmp))
            for command in block.commands:
                done = run(command, Path(tmp), env)
                print(f"```console  # line {command.line}, exit {done.returncode}")
                print(f"$ {command.text}\n{done.stdout}```")
                if done.stderr:
                    print(f"(stderr)\n{done.stderr}")
