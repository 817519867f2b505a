"""--data sources, splits, bad bytes, the registry, token caches and TBPTT batching."""
import csv
import gzip
import json
import sqlite3

import numpy as np
import pytest
import torch

from lstmgen.data import StreamBatcher, open_corpus, registry, token_cache, zero_state_windows
from lstmgen.errors import ChecksumError, DataNotFoundError, UserInputError
from lstmgen.tokenizers import Tokenizer


def test_file_split_is_contiguous_and_complete(tmp_path):
    text = "".join(f"line {i} é世\n" for i in range(500))
    p = tmp_path / "a.txt"
    p.write_text(text, encoding="utf-8")
    c = open_corpus(str(p), valid_fraction=0.2)
    train, valid = c.text("train"), c.text("valid")
    assert train + valid == text and c.text("test") == valid
    assert abs(len(valid.encode()) - 0.2 * len(text.encode())) < 8


def test_folder_glob_and_gzip(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.txt").write_text("first file\n")
    with gzip.open(tmp_path / "d" / "2.txt.gz", "wt") as fh:
        fh.write("second file\n")
    (tmp_path / "d" / ".hidden").write_text("skipped\n")
    whole = open_corpus(str(tmp_path / "d"), valid_fraction=0.5)
    assert whole.text("train") + whole.text("valid") == "first file\nsecond file\n"
    globbed = open_corpus(str(tmp_path / "d" / "*.txt"), valid_fraction=0.5)
    assert globbed.text("train") + globbed.text("valid") == "first file\n"


@pytest.mark.parametrize("names", [("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
                                   ("train/part-0.txt", "dev/part-0.txt", "test/part-0.txt"),
                                   ("wiki.train.tokens.gz", "wiki.validation.tokens", None)])
def test_folder_of_split_files_keeps_its_splits(tmp_path, names):
    """A folder holding train / valid (or dev) / test files is read as those splits, as the data sets
    ship them: the test text must never end up in training. Files naming no split are left out."""
    d = tmp_path / "d"
    for split, name in zip(("train", "valid", "test"), names):
        if name:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            opener = gzip.open if name.endswith(".gz") else open
            with opener(d / name, "wt") as fh:
                fh.write(f"the {split} text\n")
    (d / "SOURCE.md").write_text("where the files come from\n")
    c = open_corpus(str(d))
    assert c.text("train") == "the train text\n" and c.text("valid") == "the valid text\n"
    assert c.text("test") == ("the test text\n" if names[2] else "the valid text\n")
    assert c.note.startswith("split by file name: train = ")


def test_folder_with_train_and_test_files_only(tmp_path):
    """No validation file: validation is the end of the training text, test stays the test file."""
    (tmp_path / "train.txt").write_text("".join(f"train line {i}\n" for i in range(100)))
    (tmp_path / "test.txt").write_text("test text\n")
    c = open_corpus(str(tmp_path), valid_fraction=0.2)
    assert c.text("train") + c.text("valid") == (tmp_path / "train.txt").read_text()
    assert c.text("test") == "test text\n" and "the last 20% of the training text" in c.note


def test_csv_jsonl_and_sqlite(tmp_path):
    rows = [f"review number {i}" for i in range(10)]
    with open(tmp_path / "r.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[i, r] for i, r in enumerate(rows)])
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    con = sqlite3.connect(tmp_path / "r.db")
    con.execute("create table t (body text)")
    con.executemany("insert into t values (?)", [(r,) for r in rows])
    con.commit()
    con.close()
    expected = "".join(r + "\n" for r in rows)
    for spec in (f"{tmp_path}/r.csv:text", f"{tmp_path}/r.jsonl:text", f"sqlite:{tmp_path}/r.db:SELECT body FROM t"):
        c = open_corpus(spec)
        assert c.text("train") + c.text("valid") == expected, spec
        assert c.text("valid") == rows[-1] + "\n"
    with pytest.raises(UserInputError, match="no column 'body'"):
        open_corpus(f"{tmp_path}/r.csv:body").text("train")


def test_bad_utf8_names_file_and_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"good text\n" * 10 + b"caf\xe9 bad\n")
    with pytest.raises(UserInputError, match=r"bad.txt: bytes that are not UTF-8 at byte offset 103"):
        open_corpus(str(p)).text("train") + open_corpus(str(p)).text("valid")
    c = open_corpus(str(p), encoding_errors="replace")
    assert "caf\ufffd bad" in c.text("train") + c.text("valid")


def test_missing_empty_and_unknown(tmp_path):
    with pytest.raises(DataNotFoundError, match="no data set, file or folder"):
        open_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserInputError, match="is empty"):
        open_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(UserInputError, match="known: tinyshakespeare"):
        registry.get_dataset("shakespear")


def test_download_checks_sha256(tmp_path, monkeypatch):
    src = tmp_path / "remote.txt"
    src.write_text("hello\n")
    good = registry.DataFile("remote.txt", registry.sha256_of(src), src.as_uri())
    ds = registry.Dataset("toy", "lm", "toy", (good,), {"train": "remote.txt"})
    monkeypatch.delenv("LSTMGEN_DATA", raising=False)
    monkeypatch.setenv("LSTMGEN_CACHE", str(tmp_path / "cache"))
    path = registry.find_file(ds, "remote.txt")
    assert path.read_text() == "hello\n" and path.is_relative_to(tmp_path / "cache")
    bad = registry.Dataset("toy2", "lm", "toy", (registry.DataFile("remote.txt", "0" * 64, src.as_uri()),), {})
    with pytest.raises(ChecksumError, match="does not match"):
        registry.find_file(bad, "remote.txt")
    assert not (tmp_path / "cache" / "datasets" / "toy2" / "remote.txt").exists()


def test_tinyshakespeare_registry_split(data_dir):
    c = open_corpus("tinyshakespeare")
    train, valid = c.text("train"), c.text("valid")
    whole = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert len(whole) == 1115394 and registry.sha256_of(data_dir / "tinyshakespeare" / "input.txt") == \
        registry.get_dataset("tinyshakespeare").files[0].sha256
    n = int(len(whole) * 0.9)  # nanoGPT's split
    assert train == whole[:n] and valid == whole[n:] and c.text("test") == valid


def test_ptb_reads_gzip_train(data_dir):
    c = open_corpus("ptb")
    first = next(iter(c.chunks("train")))
    assert first.startswith(" aer banknote berlitz")


def test_token_cache_is_a_memmap_and_reused(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabc\n" * 300)
    c = open_corpus(str(p))
    tok = Tokenizer.train("char", c.chunks("train"))
    arr = token_cache(c, "train", tok, folder=tmp_path / "tok")
    assert isinstance(arr.ids, np.memmap) and arr.ids.dtype == np.uint16
    assert tok.decode(arr.ids.tolist()) == c.text("train") and arr.num_chars == len(c.text("train"))
    files = sorted((tmp_path / "tok").iterdir())
    again = token_cache(c, "train", tok, folder=tmp_path / "tok")
    assert sorted((tmp_path / "tok").iterdir()) == files and np.array_equal(again.ids, arr.ids)


def test_stream_batcher_streams_are_contiguous():
    ids = np.arange(103)
    b = StreamBatcher(ids, batch_size=4, bptt=7)
    xs, ys = zip(*(b.window(k) for k in range(len(b))))
    x, y = torch.cat(xs, 1), torch.cat(ys, 1)
    assert x.shape == (4, 25)
    assert torch.equal(x, torch.arange(100).view(4, 25)) and torch.equal(y, x + 1)


@pytest.mark.parametrize("rank", [0, 1])
def test_streams_kept_on_the_device_give_the_same_windows(rank):
    ids = np.arange(211, dtype=np.uint16)
    host, dev = (StreamBatcher(ids, batch_size=3, bptt=6, rank=rank, world=2) for _ in range(2))
    assert not dev.to_device("cpu", budget_bytes=10) and dev.grid is None  # too big for the budget
    assert dev.to_device("cpu", budget_bytes=10_000) and dev.grid.dtype == torch.int32
    for k in range(len(host)):
        for a, b in zip(host.window(k), dev.window(k)):
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)
    for start, length in host.variable_windows(seed=1):
        assert all(torch.equal(a, b) for a, b in zip(host.span(start, length), dev.span(start, length)))


def test_zero_state_windows():
    x, y = zero_state_windows(np.arange(1000), 256)
    assert x.shape == (3, 256) and x[1, 0] == 256 and torch.equal(y, x + 1)


def test_local_registry_file_is_verified(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("not shakespeare\n")
    monkeypatch.setenv("LSTMGEN_DATA", str(tmp_path))
    with pytest.raises(ChecksumError, match="damaged or another version"):
        open_corpus("tinyshakespeare")


def test_every_local_data_set_matches_its_checksums(data_dir):
    for ds in registry.REGISTRY.values():
        for f in ds.files:
            registry.verify_file(ds, f.name, registry.find_file(ds, f.name, download=False))


def test_chunks_are_cut_between_lines_and_keep_whitespace_runs():
    from lstmgen.data.sources import _line_aligned

    text = "first line\n\n  second\nthird line\n\n\nfourth" * 3
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    out = list(_line_aligned(iter(pieces)))
    assert "".join(out) == text and len(out) > 3
    for b in out[1:]:
        assert b[0] == "\n" and not b[1].isspace()
