"""CoNLL column files: one token per line (the word first, the tag last), blank lines between sentences,
`-DOCSTART-` lines between documents. Tags convert between IOB1 (CoNLL-2003's own), BIO (IOB2) and BIOES;
spans are read with conlleval's rules, so entity-level scores match that script.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..errors import UserInputError
from .files import open_binary
from .registry import find_file, get_dataset, verify_file


@dataclass
class Sentence:
    words: List[str]
    tags: List[str]


def read_conll(path: Path, columns: int = 0) -> List[Sentence]:
    """Sentences of a CoNLL file. Every token line must have the same number of columns (`columns`, or
    that of the first token line); an error names the file and line otherwise."""
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    with io.TextIOWrapper(open_binary(Path(path)), encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sentences.append(Sentence(words, tags))
                    words, tags = [], []
                continue
            if len(parts) < 2:
                raise UserInputError(f"{path}:{lineno}: one column; a CoNLL line holds a word, optional columns "
                                     "and its tag, separated by whitespace (is this a CoNLL file?)")
            columns = columns or len(parts)
            if len(parts) != columns:
                raise UserInputError(f"{path}:{lineno}: {len(parts)} columns where the file has {columns} "
                                     "(word ... tag); fix that line")
            words.append(parts[0])
            tags.append(parts[-1])
    if words:
        sentences.append(Sentence(words, tags))
    if not sentences:
        raise UserInputError(f"{path}: no sentences")
    return sentences


def write_conll(path: Path, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> None:
    """word gold predicted, the format conlleval reads."""
    with open(path, "w", encoding="utf-8") as fh:
        for s, pred in zip(sentences, predicted):
            for w, g, p in zip(s.words, s.tags, pred):
                fh.write(f"{w} {g} {p}\n")
            fh.write("\n")


def _split(tag: str) -> Tuple[str, str]:
    return (tag[0], tag[2:]) if len(tag) > 2 and tag[1] == "-" else ("O", "") if tag == "O" else (tag[:1], "")


def spans(tags: Sequence[str]) -> List[Tuple[str, int, int]]:
    """(label, start, end exclusive) chunks with conlleval's rules: a chunk starts at B-, S-, at an I-/E-
    after O or another label; it ends before O, B-, S-, another label, or after E-/S-."""
    out, start, label = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, lab = _split(tag)
        starts = prefix in ("B", "S") or (prefix in ("I", "E") and (label is None or lab != label))
        if label is not None and (prefix == "O" or starts):
            out.append((label, start, i))
            label = None
        if starts:
            start, label = i, lab
        if label is not None and prefix in ("E", "S"):
            out.append((label, start, i + 1))
            label = None
    return out


def to_scheme(tags: Sequence[str], scheme: str) -> List[str]:
    """The same chunks written in "bio" (IOB2) or "bioes"."""
    out = ["O"] * len(tags)
    for label, a, b in spans(tags):
        if scheme == "bioes" and b - a == 1:
            out[a] = f"S-{label}"
            continue
        out[a] = f"B-{label}"
        for k in range(a + 1, b):
            out[k] = f"I-{label}"
        if scheme == "bioes":
            out[b - 1] = f"E-{label}"
    return out


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict:
    """Entity-level precision, recall and F1 (micro, as conlleval), and per label."""
    tp: Dict[str, int] = {}
    n_gold: Dict[str, int] = {}
    n_pred: Dict[str, int] = {}
    for g, p in zip(gold, pred):
        gs, ps = set(spans(g)), set(spans(p))
        for lab, *_ in gs:
            n_gold[lab] = n_gold.get(lab, 0) + 1
        for lab, *_ in ps:
            n_pred[lab] = n_pred.get(lab, 0) + 1
        for lab, *_ in gs & ps:
            tp[lab] = tp.get(lab, 0) + 1

    def prf(t: int, ng: int, np_: int) -> Dict[str, float]:
        p = t / np_ if np_ else 0.0
        r = t / ng if ng else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

    total = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    labels = sorted(set(n_gold) | set(n_pred))
    return {**total, "per_label": {lab: prf(tp.get(lab, 0), n_gold.get(lab, 0), n_pred.get(lab, 0))
                                   for lab in labels}}


def open_tagged(spec: str) -> Dict[str, List[Sentence]]:
    """Splits of `conll2003` (train = eng.train, valid = eng.testa, test = eng.testb) or of a CoNLL file
    (`file.conll`: sentence i is valid if i % 10 == 8, test if i % 10 == 9, train otherwise)."""
    if spec == "conll2003":
        ds = get_dataset("conll2003")
        out = {}
        for split, name in (("train", "eng.train"), ("valid", "eng.testa"), ("test", "eng.testb")):
            path = find_file(ds, name)
            verify_file(ds, name, path)
            out[split] = read_conll(path)
        return out
    sentences = read_conll(Path(spec))
    out = {"train": [], "valid": [], "test": []}
    for i, s in enumerate(sentences):
        out["valid" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(s)
    return out
