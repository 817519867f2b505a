"""Labelled texts for classification: the registry's imdb and rt-polarity, or a CSV/TSV/JSON-lines file.

`--data` forms: `imdb`, `rt-polarity`, `reviews.csv:text:label`, `posts.jsonl:body:tag` (the text field,
then the label field). Splits are fixed and documented, so figures compare across runs and machines:

- imdb: the official 25k train / 25k test; valid is every 10th review of train (positions 9, 19, ...),
  which the training split then leaves out.
- rt-polarity (no official split): in each of the two files, line i goes to valid when i % 10 == 8, to
  test when i % 10 == 9, to train otherwise (80/10/10, both classes alike); `folds(k)` gives k-fold
  cross-validation over all 10,662 sentences instead.
- a file: the same i % 10 rule over its rows.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from ..errors import DataNotFoundError, UserInputError
from .files import open_binary
from .registry import find_file, get_dataset, verify_file

Example = Tuple[str, str]  # (text, label)


@dataclass
class LabelledCorpus:
    """Labelled texts by split ("train", "valid", "test") and the sorted label names."""

    name: str
    splits: Dict[str, List[Example]]
    labels: List[str]
    note: str

    def folds(self, k: int) -> Iterator[Tuple[List[Example], List[Example]]]:
        """k-fold cross-validation over every example (all splits together): (train, held-out) k times,
        example i held out in fold i % k."""
        every = [e for split in ("train", "valid", "test") for e in self.splits.get(split, [])]
        for f in range(k):
            yield ([e for i, e in enumerate(every) if i % k != f], [e for i, e in enumerate(every) if i % k == f])


def _by_position(rows: List[Example]) -> Dict[str, List[Example]]:
    splits: Dict[str, List[Example]] = {"train": [], "valid": [], "test": []}
    for i, row in enumerate(rows):
        splits["valid" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(row)
    return splits


def _lines(path: Path) -> List[str]:
    with io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="strict", newline=None) as fh:
        try:
            return [line.strip() for line in fh if line.strip()]
        except UnicodeDecodeError as e:
            raise UserInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _registry_file(name: str, file: str) -> Path:
    ds = get_dataset(name)
    path = find_file(ds, file)
    verify_file(ds, file, path)
    return path


def _imdb() -> LabelledCorpus:
    splits: Dict[str, List[Example]] = {}
    for split in ("train", "test"):
        path = _registry_file("imdb", f"{split}.jsonl")
        rows = [(d["text"].replace("<br />", " "), d["label"]) for d in map(json.loads, _lines(path))]
        if split == "train":
            splits["valid"] = [r for i, r in enumerate(rows) if i % 10 == 9]
            rows = [r for i, r in enumerate(rows) if i % 10 != 9]
        splits[split] = rows
    return LabelledCorpus("imdb", splits, ["neg", "pos"],
                          "official train/test; valid = every 10th review of train (left out of train); "
                          "<br /> tags become spaces")


def _rt_polarity() -> LabelledCorpus:
    splits: Dict[str, List[Example]] = {"train": [], "valid": [], "test": []}
    for label in ("neg", "pos"):
        for split, rows in _by_position([(t, label) for t in _lines(_registry_file("rt-polarity",
                                                                                     f"rt-polarity.{label}"))]).items():
            splits[split] += rows
    return LabelledCorpus("rt-polarity", splits, ["neg", "pos"],
                          "no official split: in each file line i is valid if i % 10 == 8, test if i % 10 == 9, "
                          "train otherwise (80/10/10)")


def _file(spec: str) -> LabelledCorpus:
    try:
        path_s, text_field, label_field = spec.rsplit(":", 2)
    except ValueError:
        raise UserInputError(f"--data {spec!r}: give a registry name (imdb, rt-polarity) or "
                             "file.csv:TEXT_FIELD:LABEL_FIELD (also .tsv, .jsonl, .gz)") from None
    path = Path(path_s)
    if not path.is_file():
        raise DataNotFoundError(f"--data {spec!r}: no file {path}")
    rows: List[Example] = []
    name = path.name.removesuffix(".gz")
    with io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="") as fh:
        if name.endswith(".jsonl"):
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    text, label = d[text_field], d[label_field]
                except json.JSONDecodeError as e:
                    raise UserInputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                except (KeyError, TypeError):
                    raise UserInputError(f"{path}:{lineno}: needs the fields {text_field!r} and {label_field!r}") \
                        from None
                rows.append(_row(path, lineno, text, label))
        else:
            reader = csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ",")
            missing = {text_field, label_field} - set(reader.fieldnames or [])
            if missing:
                raise UserInputError(f"{path}: no column {sorted(missing)[0]!r}; columns are {reader.fieldnames}")
            for lineno, d in enumerate(reader, 2):
                rows.append(_row(path, lineno, d[text_field], d[label_field]))
    if not rows:
        raise UserInputError(f"{path}: no labelled rows")
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise UserInputError(f"{path}: every row has the label {labels[0]!r}; a classifier needs two or more")
    return LabelledCorpus(path.name, _by_position(rows), labels, "row i is valid if i % 10 == 8, test if "
                          "i % 10 == 9, train otherwise (80/10/10)")


def _row(path: Path, lineno: int, text, label) -> Example:
    """One (text, label) row, or an error naming the file and line: nothing is dropped silently."""
    if label is None or str(label).strip() == "":
        raise UserInputError(f"{path}:{lineno}: the label is missing")
    if text is None or not str(text).strip():
        raise UserInputError(f"{path}:{lineno}: the text is empty")
    return str(text), str(label).strip()


def open_labelled(spec: str) -> LabelledCorpus:
    """The labelled corpus a `--data` spec names (see the module docstring)."""
    if spec == "imdb":
        return _imdb()
    if spec == "rt-polarity":
        return _rt_polarity()
    return _file(spec)
