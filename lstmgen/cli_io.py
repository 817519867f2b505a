"""Reading what the command line names: texts from arguments, files or standard input.

One place for it, so that every command answers a missing or undecodable file with the same one-line
error (exit 2) instead of a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import UserInputError


def read_text(path: str, flag: str) -> str:
    """The whole text of `path` ('-': standard input).

    Args:
        path: the file named on the command line.
        flag: the option that named it, for the error message (e.g. "--input").
    """
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise UserInputError(f"{flag} {path}: {e.strerror}; check the path") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{flag} {path}: not UTF-8 at byte {e.start}") from None


def input_lines(texts: Sequence[str], path: Optional[str], keep_blank: bool = False,
                flag: str = "--input") -> List[str]:
    """The texts given as arguments, then one per line of `path` (if any).

    Args:
        texts: texts given as positional arguments.
        path: a file of one text per line ('-': standard input), or None.
        keep_blank: keep blank lines (so that output line i answers input line i), else drop them.
        flag: the option that named the file, for messages.
    """
    out = list(texts)
    if path:
        lines = read_text(path, flag).split("\n")  # not splitlines(): a text may hold \x0c or \u2028
        if lines[-1] == "":  # the file's last newline ends a line, it does not start one
            lines.pop()
        out += [line for line in lines if keep_blank or line.strip()]
    if not out:
        raise UserInputError(f"give texts as arguments, or {flag} FILE (one per line; '-' for standard input)")
    return out


def output_file(path: str, flag: str) -> Path:
    """`path` ready to be written: its folder made when missing.

    Args:
        path: the file named on the command line.
        flag: the option that named it, for the error message (e.g. "--png").
    """
    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"{flag} {path} is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"{flag} {path}: cannot make the folder {p.parent} ({e.strerror})") from None
    return p
