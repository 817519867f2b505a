"""The `--data` syntax: one spec string to a Corpus that streams text chunks per split.

Accepted (DESIGN.md): a registry name, a file, a folder, a glob, `file.csv:column`, `file.jsonl:field`,
`sqlite:path.db:SELECT ...`. Plain text is streamed in blocks and decoded incrementally, so no corpus is
ever held in memory whole; `.gz` files are read through gzip. Sources without an official split are cut
contiguously: the first `1 - valid_fraction` for train, the rest for valid (and test names the same
part). Text sources are cut by bytes at a UTF-8 character boundary, row sources by rows.
"""
from __future__ import annotations

import codecs
import csv
import glob as globlib
import hashlib
import io
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from ..errors import DataNotFoundError, UserInputError
from .files import open_binary
from .registry import REGISTRY, find_file, get_dataset, verify_file

BLOCK = 1 << 20  # bytes read at a time
ENCODING_ERRORS = ("strict", "replace", "ignore")


def _byte_size(path: Path) -> int:
    if path.suffix not in (".gz", ".zip"):
        return path.stat().st_size
    with open_binary(path) as fh:
        return sum(len(b) for b in iter(lambda: fh.read(BLOCK), b""))


@dataclass
class Corpus:
    """A named source of text with splits.

    Args:
        name: what the user passed (shown in messages and model cards).
        splits: split name -> a function returning an iterator of text chunks.
        fingerprint: changes whenever the underlying bytes may have changed (for token caches).
        note: how the splits were made.
    """

    name: str
    splits: dict
    fingerprint: str
    note: str = ""

    def chunks(self, split: str) -> Iterator[str]:
        """The text of `split`, in order, in chunks of about a megabyte cut just before a line break.

        The cuts fall where encoding chunk by chunk gives the ids of the whole text, for every tokenizer.
        """
        if split not in self.splits:
            raise UserInputError(f"{self.name}: no split {split!r}; it has {', '.join(self.splits)}")
        return _line_aligned(self.splits[split]())

    def text(self, split: str) -> str:
        """The whole split as one string (for small corpora and tests)."""
        return "".join(self.chunks(split))


_LINE_START = re.compile(r"\n(?=\S)")


def _line_aligned(chunks: Iterator[str], limit: int = 8 * BLOCK) -> Iterator[str]:
    """Re-cut chunks just before a line break that is followed by a non-space character: no word is
    split, and byte-level BPE pre-tokenizes each piece as it would the whole text (see tokenizers.py)."""
    buf = ""
    for chunk in chunks:
        buf += chunk
        cut = 0
        for m in _LINE_START.finditer(buf, max(0, len(buf) - len(chunk) - 1)):
            cut = m.start()
        if not cut and len(buf) > limit:  # one enormous line: cut at a space rather than hold it all
            cut = buf.rfind(" ") + 1 or len(buf)
        if cut:
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf


# -- text files cut by byte ranges ----------------------------------------------------------------------
class _ByteStream:
    """Several files read as one byte sequence, decoded as UTF-8 between two global offsets."""

    def __init__(self, paths: Sequence[Path], encoding_errors: str) -> None:
        self.paths = list(paths)
        self.sizes = [_byte_size(p) for p in self.paths]
        self.total = sum(self.sizes)
        self.errors = encoding_errors

    def boundary(self, fraction: float) -> int:
        """The global byte offset nearest below `fraction` of the total that starts a UTF-8 character."""
        pos = int(self.total * fraction)
        if pos <= 0 or pos >= self.total:
            return max(0, min(pos, self.total))
        head = b"".join(b for _, _, b in self._blocks(pos, min(pos + 4, self.total)))
        while head and (head[0] & 0xC0) == 0x80:  # a continuation byte: move to the character's end
            head, pos = head[1:], pos + 1
        return pos

    def _blocks(self, start: int, end: int) -> Iterator[Tuple[Path, int, bytes]]:
        """(file, offset in file, bytes) covering global [start, end)."""
        base = 0
        for path, size in zip(self.paths, self.sizes):
            lo, hi = max(start - base, 0), min(end - base, size)
            if lo < hi:
                with open_binary(path) as fh:
                    if path.suffix in (".gz", ".zip"):
                        skip = lo
                        while skip:
                            skip -= len(fh.read(min(skip, BLOCK)))
                    else:
                        fh.seek(lo)
                    pos = lo
                    while pos < hi:
                        block = fh.read(min(BLOCK, hi - pos))
                        if not block:
                            break
                        yield path, pos, block
                        pos += len(block)
            base += size

    def text(self, start: int, end: int) -> Iterator[str]:
        decoder, current, current_end = None, None, 0
        for path, pos, block in self._blocks(start, end):
            if path != current:  # each file decodes on its own; a file must not end mid-character
                if decoder is not None:
                    yield self._decode(decoder, b"", current, current_end, final=True)
                decoder, current = codecs.getincrementaldecoder("utf-8")(self.errors), path
            yield self._decode(decoder, block, path, pos)
            current_end = pos + len(block)
        if decoder is not None:
            yield self._decode(decoder, b"", current, current_end, final=True)

    @staticmethod
    def _decode(decoder, block: bytes, path: Path, pos: int, final: bool = False) -> str:
        pending = len(decoder.getstate()[0])
        try:
            return decoder.decode(block, final)
        except UnicodeDecodeError as e:
            offset = pos - pending + e.start
            raise UserInputError(f"{path}: bytes that are not UTF-8 at byte offset {offset} ({e.reason}); "
                                 "convert the file to UTF-8, or pass --encoding-errors replace to go on"
                                 ) from None


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            st = p.stat()
            p = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        h.update(str(p).encode() + b"\0")
    return h.hexdigest()[:16]


def text_corpus(name: str, paths: Sequence[Path], valid_fraction: float, encoding_errors: str,
                fixed: Optional[dict] = None, note: str = "") -> Corpus:
    """A corpus of plain text files, cut contiguously (or by `fixed` split -> fraction pairs)."""
    stream = _ByteStream(paths, encoding_errors)
    if stream.total == 0:
        raise UserInputError(f"corpus {name!r} is empty ({', '.join(map(str, paths))}); give it some text")
    cuts = fixed or {"train": (0.0, 1 - valid_fraction), "valid": (1 - valid_fraction, 1.0),
                     "test": (1 - valid_fraction, 1.0)}
    splits = {}
    for split, (a, b) in cuts.items():
        lo, hi = stream.boundary(a), stream.boundary(b)
        splits[split] = (lambda lo=lo, hi=hi: stream.text(lo, hi))
    note = note or (f"no official split: train = first {1 - valid_fraction:.0%} of the bytes, valid = the "
                    f"last {valid_fraction:.0%}; test names the same part")
    return Corpus(name, splits, _fingerprint(name, *paths, cuts, encoding_errors), note)


# -- row sources: csv column, jsonl field, sqlite query -------------------------------------------------
def _row_corpus(name: str, rows: Callable[[], Iterator[str]], fp: str, valid_fraction: float) -> Corpus:
    n = sum(1 for _ in rows())
    if n == 0:
        raise UserInputError(f"corpus {name!r} has no rows; check the file and the column or query")
    cut = int(n * (1 - valid_fraction))

    def part(lo: int, hi: int) -> Iterator[str]:
        for i, row in enumerate(rows()):
            if lo <= i < hi:
                yield row + "\n"

    valid = lambda: part(cut, n)  # noqa: E731
    note = f"no official split: train = first {1 - valid_fraction:.0%} of {n} rows, valid (= test) the rest"
    return Corpus(name, {"train": lambda: part(0, cut), "valid": valid, "test": valid}, fp, note)


def _text_rows(path: Path, encoding_errors: str) -> io.TextIOBase:
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors=encoding_errors, newline="")


def _csv_rows(path: Path, column: str, errors: str) -> Iterator[str]:
    delim = "\t" if path.suffix in (".tsv",) or path.name.endswith(".tsv.gz") else ","
    with _text_rows(path, errors) as fh:
        reader = csv.DictReader(fh, delimiter=delim)
        if column not in (reader.fieldnames or []):
            raise UserInputError(f"{path}: no column {column!r}; columns are {reader.fieldnames}")
        for row in reader:
            if row[column]:
                yield row[column]


def _jsonl_rows(path: Path, field: str, errors: str) -> Iterator[str]:
    with _text_rows(path, errors) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)[field]
            except json.JSONDecodeError as e:
                raise UserInputError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line")
            except (KeyError, TypeError):
                raise UserInputError(f"{path}:{lineno}: no field {field!r}; name a field every line has")
            if value:
                yield str(value)


def _sqlite_rows(path: Path, query: str) -> Iterator[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in con.execute(query):
            if row and row[0] is not None:
                yield str(row[0])
    except sqlite3.Error as e:
        raise UserInputError(f"{path}: query failed ({e}); the first column of each row is the text")
    finally:
        con.close()


# -- the spec ------------------------------------------------------------------------------------------
def _files_of(spec: str) -> List[Path]:
    p = Path(spec).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not files:
            raise UserInputError(f"folder {spec!r} holds no files; put text files in it")
        return files
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(f) for f in globlib.glob(spec, recursive=True) if Path(f).is_file())
        if not files:
            raise DataNotFoundError(f"glob {spec!r} matches no files; check the pattern")
        return files
    raise DataNotFoundError(f"no data set, file or folder {spec!r}; give a path that exists or one of "
                            f"the data sets: {', '.join(REGISTRY)}")


def open_corpus(spec: str, *, valid_fraction: float = 0.1, encoding_errors: str = "strict") -> Corpus:
    """Turn a `--data` spec into a Corpus.

    Args:
        spec: see the module docstring.
        valid_fraction: the part held out for validation where the source has no official split.
        encoding_errors: "strict" (stop at the first bad byte), "replace" or "ignore".
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise UserInputError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}")
    if not 0 < valid_fraction < 1:
        raise UserInputError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    if spec in REGISTRY:
        return registry_corpus(spec, encoding_errors)
    if spec.startswith("sqlite:"):
        _, rest = spec.split(":", 1)
        path, sep, query = rest.partition(":")
        if not sep or not query.strip():
            raise UserInputError("sqlite source must be sqlite:PATH.db:SELECT ...")
        db = Path(path)
        if not db.is_file():
            raise DataNotFoundError(f"sqlite database {path!r} not found; check the path")
        return _row_corpus(spec, lambda: _sqlite_rows(db, query), _fingerprint(db, query), valid_fraction)
    head, sep, key = spec.rpartition(":")
    if sep and key and Path(head).is_file() and not Path(spec).exists():
        path = Path(head)
        suffixes = "".join(path.suffixes[-2:])
        if ".csv" in suffixes or ".tsv" in suffixes:
            rows = lambda: _csv_rows(path, key, encoding_errors)  # noqa: E731
        elif ".jsonl" in suffixes or ".json" in suffixes:
            rows = lambda: _jsonl_rows(path, key, encoding_errors)  # noqa: E731
        else:
            raise UserInputError(f"{spec!r}: FILE:FIELD works for .csv, .tsv and .jsonl files")
        return _row_corpus(spec, rows, _fingerprint(path, key, encoding_errors), valid_fraction)
    files, root = _files_of(spec), Path(spec).expanduser()
    groups = _split_files(root, files) if root.is_dir() else None
    if groups:
        return split_files_corpus(spec, groups, valid_fraction, encoding_errors)
    return text_corpus(spec, files, valid_fraction, encoding_errors)


# Words in a file's path that name its split, as data sets spell them (ptb.train.txt, wiki.valid.tokens,
# dev.txt, test/part-0.txt) and as Hugging Face datasets reads a folder's split files.
SPLIT_WORDS = {"train": {"train", "training"}, "valid": {"valid", "validation", "val", "dev"}, "test": {"test"}}


def _split_files(root: Path, files: Sequence[Path]) -> Optional[dict]:
    """A folder's files by the split their path names, when it holds a train file and a valid or test
    file (else None: the folder is one text). Files that name no split (a README, SOURCE.md) are left out."""
    groups: dict = {}
    for f in files:
        words = set(re.split(r"[^a-z0-9]+", str(f.relative_to(root)).lower()))
        named = [split for split, names in SPLIT_WORDS.items() if words & names]
        if len(named) == 1:
            groups.setdefault(named[0], []).append(f)
    return groups if "train" in groups and ("valid" in groups or "test" in groups) else None


def split_files_corpus(name: str, groups: dict, valid_fraction: float, encoding_errors: str) -> Corpus:
    """A corpus whose splits are files: train from the train files, valid and test from theirs. Without
    valid files, validation is the last `valid_fraction` of the training text; without test files, test
    names the validation text."""
    train = groups["train"]
    has_valid = "valid" in groups
    cut = (0.0, 1.0) if has_valid else (0.0, 1 - valid_fraction)
    parts = {"train": text_corpus(name, train, valid_fraction, encoding_errors, fixed={"train": cut})}
    parts["valid"] = text_corpus(name, groups["valid"], valid_fraction, encoding_errors, fixed={"valid": (0.0, 1.0)}) \
        if has_valid else text_corpus(name, train, valid_fraction, encoding_errors,
                                      fixed={"valid": (1 - valid_fraction, 1.0)})
    parts["test"] = text_corpus(name, groups["test"], valid_fraction, encoding_errors, fixed={"test": (0.0, 1.0)}) \
        if "test" in groups else parts["valid"]
    splits = {split: part.splits[split if split in part.splits else "valid"] for split, part in parts.items()}

    def names(split: str) -> str:
        return ", ".join(f.name for f in groups[split])

    note = (f"split by file name: train = {names('train')}; valid = "
            + (names("valid") if has_valid else f"the last {valid_fraction:.0%} of the training text")
            + "; test = " + (names("test") if "test" in groups else "the validation text"))
    return Corpus(name, splits, _fingerprint(*(p.fingerprint for p in parts.values())), note)


def _labelled_text_corpus(name: str) -> Corpus:
    """The texts of a labelled data set (imdb, rt-polarity), one per line, without their labels: the
    in-domain text a language model is pretrained on before it becomes a classifier (ULMFiT). The
    splits are the classifier's own, so its test texts are never seen."""
    from .labelled import open_labelled
    from .registry import REGISTRY

    def split(which: str):
        return lambda: iter(["".join(t.replace("\n", " ").strip() + "\n" for t, _ in
                                     open_labelled(name).splits.get(which, []))])

    ds = REGISTRY[name]
    fp = _fingerprint(*(f.sha256 for f in ds.files), "labelled-text")
    return Corpus(name, {s: split(s) for s in ("train", "valid", "test")}, fp,
                  "the texts of the classification splits, one per line, labels dropped")


def registry_corpus(name: str, encoding_errors: str = "strict") -> Corpus:
    """A registry data set as a Corpus (language-model data sets, and the texts of labelled ones)."""
    ds = get_dataset(name)
    if ds.task == "classification":
        return _labelled_text_corpus(name)
    if ds.task != "lm":
        raise UserInputError(f"data set {name!r} is for {ds.task}, not language modelling; "
                             "use tinyshakespeare, ptb, wikitext-2, imdb or rt-polarity, or a file")
    splits, fps = {}, []
    for split, rule in ds.splits.items():
        if isinstance(rule, tuple):
            fname, a, b = rule
            path = find_file(ds, fname)
            verify_file(ds, fname, path)
            sub = text_corpus(name, [path], 0.1, encoding_errors, fixed={split: (a, b)})
        else:
            path = find_file(ds, rule)
            verify_file(ds, rule, path)
            sub = text_corpus(name, [path], 0.1, encoding_errors, fixed={split: (0.0, 1.0)})
        splits[split] = sub.splits[split]
        fps.append(sub.fingerprint)
    return Corpus(name, splits, _fingerprint(*fps), ds.split_note)
