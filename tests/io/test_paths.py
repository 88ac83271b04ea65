"""The path checks the commands share: folder or file is said as such, and nothing is made."""

from __future__ import annotations

import pytest

from gpt_tui.errors import GptTuiError
from gpt_tui.io.batches import BatchError
from gpt_tui.io.paths import PathError, check_file, check_out_folder


def test_an_out_folder_not_there_yet_passes_and_nothing_is_made(tmp_path):
    out = tmp_path / "runs" / "a" / "b"
    assert check_out_folder(out) == out and not (tmp_path / "runs").exists()
    assert check_out_folder(tmp_path) == tmp_path  # an existing folder: resumed into


def test_a_file_on_the_way_to_out_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PathError, match=r"f is a file, not a folder"):
        check_out_folder(tmp_path / "f")
    with pytest.raises(PathError, match=r"g/h: .*f is a file, so no folder can be made"):
        check_out_folder(tmp_path / "f" / "g" / "h")


def test_check_file_names_a_folder_and_the_file_inside_it(tmp_path):
    with pytest.raises(BatchError, match=r"is a folder, not a file: give a text file$"):
        check_file(tmp_path, "--data", "a text file", ("input.txt",), BatchError)
    (tmp_path / "input.txt").write_text("x")
    with pytest.raises(PathError, match=rf"use --data {tmp_path}/input.txt$") as err:
        check_file(tmp_path, "--data", "a text file", ("input.txt",))
    assert isinstance(err.value, GptTuiError)  # exit status 2 at the command line
    assert check_file(tmp_path / "input.txt", "--data", "a text file") == tmp_path / "input.txt"
    with pytest.raises(PathError, match=r"nope: no such file \(give a text file\)"):
        check_file(tmp_path / "nope", "--data", "a text file")
