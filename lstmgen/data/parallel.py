"""Source-target pairs for sequence to sequence: the registry's multi30k, fra-eng, squad and gigaword, or
your own files. Splits are fixed and documented, so figures compare across runs and machines.

`--data` forms:
- `multi30k` or `multi30k:de-en` / `multi30k:en-de`: the official train / val / test_2016_flickr files.
- `fra-eng` or `fra-eng:en-fr` / `fra-eng:fr-en` (Tatoeba's fra.txt, English<TAB>French; default en-fr as in
  the Keras seq2seq tutorial). No official split: pair i is valid when i % 50 == 48, test when i % 50 == 49.
- `squad`: question and context -> the first answer. Only the v1.1 dev set is here (48 articles): articles
  0-39 train, 40-43 valid, 44-47 test, split by article so no context is in two splits. The source reads
  "question: ... context: ...".
- `gigaword`: article sentence -> headline. Only the 1,951 test pairs are here; pair i is valid when
  i % 10 == 8, test when i % 10 == 9, train otherwise (users with the full set pass their own files).
- `corpus/train` with `src_lang`/`tgt_lang` (fairseq style): corpus/train.de and corpus/train.en, line by
  line; corpus/valid.* (or val.*) and corpus/test.* are used when present.
- `pairs.tsv` (or .txt): source<TAB>target per line (further columns, like Tatoeba's attribution, ignored);
  `pairs.jsonl` with "source" and "target" fields, or `pairs.jsonl:SRC_FIELD:TGT_FIELD`. A single file is
  split by position: pair i is valid when i % 10 == 8, test when i % 10 == 9.

Nothing is dropped silently: unequal line counts name both files and counts; an empty side names the
file and line.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataNotFoundError, UserInputError
from .files import open_binary
from .registry import find_file, get_dataset, verify_file

Pair = Tuple[str, str]
TASKS = {"multi30k": "translation", "fra-eng": "translation", "squad": "question-answering",
         "gigaword": "summarization"}


@dataclass
class ParallelCorpus:
    """Pairs by split ("train", "valid", "test"), the task they serve and how they were split."""

    name: str
    splits: Dict[str, List[Pair]]
    task: str
    src_lang: Optional[str]
    tgt_lang: Optional[str]
    note: str


def _read_lines(path: Path, member: Optional[str] = None) -> List[str]:
    with io.TextIOWrapper(open_binary(path, member), encoding="utf-8", newline=None) as fh:
        try:
            return [line.rstrip("\n") for line in fh]
        except UnicodeDecodeError as e:
            raise UserInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _zip_lines(src_path, src_lines: List[str], tgt_path, tgt_lines: List[str]) -> List[Pair]:
    if src_lines and src_lines[-1] == "" and tgt_lines and tgt_lines[-1] == "":
        src_lines, tgt_lines = src_lines[:-1], tgt_lines[:-1]
    if len(src_lines) != len(tgt_lines):
        raise UserInputError(f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
                             "parallel files need one line per pair")
    pairs = []
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines), 1):
        pairs.append(_pair(s, t, f"{src_path}:{i}" if not s.strip() else f"{tgt_path}:{i}"))
    return pairs


def _pair(src, tgt, where: str) -> Pair:
    """One pair, or an error naming where it is: nothing is dropped silently."""
    if not isinstance(src, str) or not isinstance(tgt, str) or not src.strip() or not tgt.strip():
        raise UserInputError(f"{where}: empty source or target; remove the pair or fill it in")
    return src.strip(), tgt.strip()


def _by_position(pairs: List[Pair], every: int = 10) -> Dict[str, List[Pair]]:
    splits: Dict[str, List[Pair]] = {"train": [], "valid": [], "test": []}
    for i, p in enumerate(pairs):
        r = i % every
        splits["valid" if r == every - 2 else "test" if r == every - 1 else "train"].append(p)
    return splits


def _registry(name: str, file: str) -> Path:
    ds = get_dataset(name)
    path = find_file(ds, file)
    verify_file(ds, file, path)
    return path


def _langs(spec: str, default: Tuple[str, str], allowed: Tuple[str, str], src_lang, tgt_lang) -> Tuple[str, str]:
    if ":" in spec:
        try:
            src_lang, tgt_lang = spec.split(":", 1)[1].split("-")
        except ValueError:
            raise UserInputError(f"--data {spec!r}: write the direction as SRC-TGT, e.g. "
                                 f"{spec.split(':')[0]}:{default[0]}-{default[1]}") from None
    src_lang, tgt_lang = src_lang or default[0], tgt_lang or default[1]
    if {src_lang, tgt_lang} != set(allowed):
        raise UserInputError(f"--data {spec!r}: languages must be {allowed[0]} and {allowed[1]}, got "
                             f"{src_lang}-{tgt_lang}")
    return src_lang, tgt_lang


def _multi30k(spec: str, src_lang, tgt_lang) -> ParallelCorpus:
    s, t = _langs(spec, ("de", "en"), ("de", "en"), src_lang, tgt_lang)
    splits = {}
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        sp, tp = _registry("multi30k", f"{stem}.{s}"), _registry("multi30k", f"{stem}.{t}")
        splits[split] = _zip_lines(sp, _read_lines(sp), tp, _read_lines(tp))
    return ParallelCorpus("multi30k", splits, "translation", s, t,
                          "official splits: train 29,000 / val 1,014 / test2016 (flickr) 1,000")


def _fra_eng(spec: str, src_lang, tgt_lang) -> ParallelCorpus:
    s, t = _langs(spec, ("en", "fr"), ("en", "fr"), src_lang, tgt_lang)
    path = _registry("fra-eng", "fra-eng.zip")
    pairs = []
    for i, line in enumerate(_read_lines(path, "fra.txt"), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise UserInputError(f"{path} (fra.txt):{i}: expected English<TAB>French")
        en, fr = _pair(cols[0], cols[1], f"{path} (fra.txt):{i}")
        pairs.append((en, fr) if s == "en" else (fr, en))
    return ParallelCorpus("fra-eng", _by_position(pairs, 50), "translation", s, t,
                          "no official split: pair i is valid if i % 50 == 48, test if i % 50 == 49")


def squad_source(question: str, context: str) -> str:
    """How a SQuAD example reads as a source text."""
    return f"question: {question.strip()} context: {context.strip()}"


def _squad() -> ParallelCorpus:
    path = _registry("squad", "dev-v1.1.json")
    with open_binary(path) as fh:
        articles = json.load(fh)["data"]
    splits: Dict[str, List[Pair]] = {"train": [], "valid": [], "test": []}
    for a, article in enumerate(articles):
        split = "train" if a < 40 else "valid" if a < 44 else "test"
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                splits[split].append((squad_source(qa["question"], para["context"]), qa["answers"][0]["text"]))
    return ParallelCorpus("squad", splits, "question-answering", None, None,
                          "SQuAD v1.1 dev only: articles 0-39 train, 40-43 valid, 44-47 test; the target is the "
                          "first answer")


def _gigaword() -> ParallelCorpus:
    path = _registry("gigaword", "test.jsonl")
    pairs = []
    for i, line in enumerate(_read_lines(path), 1):
        if line.strip():
            d = json.loads(line)
            pairs.append(_pair(d.get("text"), (d.get("summaries") or [None])[0], f"{path}:{i}"))
    return ParallelCorpus("gigaword", _by_position(pairs), "summarization", None, None,
                          "only the 1,951 test pairs are here: pair i is valid if i % 10 == 8, test if i % 10 == 9, "
                          "train otherwise")


def _prefix(spec: str, src_lang: str, tgt_lang: str) -> ParallelCorpus:
    base = Path(spec)
    src, tgt = Path(f"{spec}.{src_lang}"), Path(f"{spec}.{tgt_lang}")
    for p in (src, tgt):
        if not p.is_file() and not Path(f"{p}.gz").is_file():
            raise DataNotFoundError(f"--data {spec} with --src-lang {src_lang} --tgt-lang {tgt_lang}: no file {p}")

    def read(prefix: Path) -> Optional[List[Pair]]:
        sp, tp = (Path(f"{prefix}.{lang}") for lang in (src_lang, tgt_lang))
        sp, tp = (p if p.is_file() else Path(f"{p}.gz") for p in (sp, tp))
        if not sp.is_file() and not tp.is_file():
            return None
        if not sp.is_file() or not tp.is_file():
            raise DataNotFoundError(f"{sp if not sp.is_file() else tp}: missing (its pair file exists)")
        return _zip_lines(sp, _read_lines(sp), tp, _read_lines(tp))

    train = read(base)
    if base.name == "train":
        valid = read(base.with_name("valid")) or read(base.with_name("val"))
        test = read(base.with_name("test"))
        if valid is not None:
            return ParallelCorpus(base.name, {"train": train, "valid": valid, "test": test or []}, "translation",
                                  src_lang, tgt_lang, "the files' own splits (train, valid/val, test)")
    return ParallelCorpus(base.name, _by_position(train), "translation", src_lang, tgt_lang,
                          "one file pair: pair i is valid if i % 10 == 8, test if i % 10 == 9")


def _pairs_file(spec: str) -> ParallelCorpus:
    path_s, fields = spec, ("source", "target")
    if spec.count(":") >= 2 and not Path(spec).is_file():
        path_s, s_field, t_field = spec.rsplit(":", 2)
        fields = (s_field, t_field)
    path = Path(path_s)
    if not path.is_file():
        raise DataNotFoundError(f"--data {spec!r}: no file {path}")
    pairs = []
    jsonl = path.name.removesuffix(".gz").endswith(".jsonl")
    for i, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                d = json.loads(line)
                pairs.append(_pair(d[fields[0]], d[fields[1]], f"{path}:{i}"))
            except json.JSONDecodeError as e:
                raise UserInputError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            except (KeyError, TypeError):
                raise UserInputError(f"{path}:{i}: needs the fields {fields[0]!r} and {fields[1]!r}") from None
        else:
            cols = line.split("\t")
            if len(cols) < 2:
                raise UserInputError(f"{path}:{i}: expected source<TAB>target")
            pairs.append(_pair(cols[0], cols[1], f"{path}:{i}"))
    if not pairs:
        raise UserInputError(f"{path}: no pairs")
    return ParallelCorpus(path.name, _by_position(pairs), "translation", None, None,
                          "one file: pair i is valid if i % 10 == 8, test if i % 10 == 9, train otherwise")


def open_parallel(spec: str, src_lang: Optional[str] = None, tgt_lang: Optional[str] = None) -> ParallelCorpus:
    """The pairs a `--data` spec names (see the module docstring).

    Args:
        spec: a registry name (with an optional :SRC-TGT), a fairseq-style prefix, or a TSV/JSONL file.
        src_lang / tgt_lang: the languages (registry direction, or the suffixes of prefix files).
    """
    name = spec.split(":", 1)[0]
    if name == "multi30k":
        return _multi30k(spec, src_lang, tgt_lang)
    if name == "fra-eng":
        return _fra_eng(spec, src_lang, tgt_lang)
    if spec == "squad":
        return _squad()
    if spec == "gigaword":
        return _gigaword()
    if src_lang and tgt_lang and not Path(spec).is_file():
        return _prefix(spec, src_lang, tgt_lang)
    if Path(spec.rsplit(":", 2)[0]).is_file() or Path(spec).is_file():
        return _pairs_file(spec)
    raise DataNotFoundError(f"--data {spec!r}: not a data set name (multi30k, fra-eng, squad, gigaword), a file "
                            "of pairs (.tsv, .jsonl), or a prefix with --src-lang and --tgt-lang")
