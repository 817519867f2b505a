"""Texts named on the command line: arguments, files, standard input, and the one-line errors; output into
a closed pipe."""
import io
import os
import subprocess
import sys

import pytest

from lstmgen.cli import main
from lstmgen.cli_io import input_lines, output_file, read_text
from lstmgen.errors import UserInputError


def test_lines_of_a_file(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("first\n\nthird \u2028 same line\x0c too\r\nlast\n", encoding="utf-8")
    assert input_lines(["arg"], str(f)) == ["arg", "first", "third \u2028 same line\x0c too", "last"]
    # kept blank lines keep the line numbers; the final newline does not add an empty text
    assert input_lines([], str(f), keep_blank=True) == ["first", "", "third \u2028 same line\x0c too", "last"]


def test_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nb"))
    assert input_lines([], "-") == ["a", "b"]


@pytest.mark.parametrize("content, message", [(None, "No such file"), (b"ok\n\xff\xfe\n", "not UTF-8 at byte 3")])
def test_unreadable_files_name_the_flag(tmp_path, content, message):
    f = tmp_path / "in.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(UserInputError, match=f"--text-file {f}: {message}"):
        read_text(str(f), "--text-file")


def test_nothing_given():
    with pytest.raises(UserInputError, match="give texts as arguments, or --input FILE"):
        input_lines([], None)


@pytest.mark.parametrize("command", ["classify", "tag"])
def test_missing_input_file_exits_2_with_one_line(command, tmp_path, capsys):
    assert main([command, "any-model", "--input", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lstmgen: error: --input ") and "check the path" in err and err.count("\n") == 1


def test_output_files(tmp_path, capsys):
    assert output_file(str(tmp_path / "new" / "deeper" / "plot.png"), "--png").parent.is_dir()
    with pytest.raises(UserInputError, match="is a folder"):
        output_file(str(tmp_path), "--png")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserInputError, match=r"--out .*: cannot make the folder"):
        output_file(str(tmp_path / "afile" / "report.html"), "--out")
    # the CLI says so in one line, before loading anything
    assert main(["inspect", "any-model", "--text", "hi", "--out", str(tmp_path / "afile" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "cannot make the folder" in err and err.count("\n") == 1


def test_a_closed_pipe_ends_quietly():
    """`lstmgen ... | head`: when the reader has gone, the command stops with 141 (128 + SIGPIPE) and no
    traceback or 'Exception ignored' message, for output large or small."""
    for argv in (["datasets", "list"], ["generate", "shakespeare-char", "--max-new-tokens", "3000", "--no-stream"]):
        r, w = os.pipe()
        os.close(r)  # nobody reads
        try:
            proc = subprocess.run([sys.executable, "-m", "lstmgen", *argv], stdout=w, stderr=subprocess.PIPE,
                                  text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        finally:
            os.close(w)
        assert proc.returncode == 141, proc.stderr
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
