"""Errors a user can cause.

Each is a ValueError or FileNotFoundError subclass, so Python callers can catch the usual types, and
each carries one line that names the thing and the fix. The CLI prints that line and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class LstmgenError(Exception):
    """Marker for errors caused by input, not by a bug in lstmgen."""


class UserInputError(LstmgenError, ValueError):
    """A bad option value, bad bytes, an unknown name."""


class DataNotFoundError(LstmgenError, FileNotFoundError):
    """A corpus path or data set that cannot be found."""


class ChecksumError(LstmgenError, ValueError):
    """A downloaded or local data file whose sha256 differs from the registry's."""


class ModelFolderError(LstmgenError, ValueError):
    """A model folder with a missing or malformed file."""


def check_range(name: str, value, low=None, high=None, *, low_open: bool = False) -> None:
    """Raise UserInputError when `value` is outside [low, high] (or (low, high] with low_open)."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):  # True is an int to Python, not to a user
        raise UserInputError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and value != value:
        raise UserInputError(f"{name} must be a number, got NaN")
    bad = (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high)
    if bad:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        rule = " and ".join(r for r in (lo, hi) if r)
        raise UserInputError(f"{name} must be {rule}, got {value!r}")


def as_texts(texts, name: str = "texts") -> list:
    """One text or a list (or tuple) of texts, as a list; anything else is a UserInputError naming `name`
    (not a TypeError deep in a tokenizer)."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
        what = type(texts).__name__ + (" holding other things" if isinstance(items, (list, tuple)) else "")
        raise UserInputError(f"{name} must be a string or a list of strings, got {what}")
    return list(items)
