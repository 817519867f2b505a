"""Token caches: a tokenized split on disk as a uint16/uint32 array, read back through a memory map.

Encoding streams chunk by chunk to the file, and training reads windows straight from the map, so a corpus
larger than RAM trains in bounded memory. The file name is a hash of the corpus fingerprint, the tokenizer
and the split: a changed file or tokenizer gets a new cache, never a stale one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path, atomic_write_bytes
from ..errors import UserInputError
from ..tokenizers import Tokenizer
from .registry import cache_dir
from .sources import Corpus


@dataclass
class TokenArray:
    """A tokenized split: `ids` (a read-only memory map) and how many characters it came from."""

    ids: np.ndarray
    num_chars: int

    def __len__(self) -> int:
        return len(self.ids)


def token_cache(corpus: Corpus, split: str, tokenizer: Tokenizer, folder: Optional[Path] = None) -> TokenArray:
    """Encode `split` of `corpus` once and return it memory-mapped.

    Args:
        corpus: the source.
        split: "train", "valid" or "test".
        tokenizer: the tokenizer whose ids are stored.
        folder: where caches live (default: the user cache's tokens/ folder).
    """
    folder = Path(folder or cache_dir() / "tokens")
    folder.mkdir(parents=True, exist_ok=True)
    tok_hash = hashlib.sha256(tokenizer.hf.to_str().encode()).hexdigest()[:16]
    key = hashlib.sha256(f"{corpus.fingerprint}|{tok_hash}|{split}".encode()).hexdigest()[:24]
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    path, meta_path = folder / f"{key}.{np.dtype(dtype).name}", folder / f"{key}.json"
    if not (path.exists() and meta_path.exists()):
        _write(corpus, split, tokenizer, dtype, path, meta_path)
    meta = json.loads(meta_path.read_text())
    if meta["num_tokens"] == 0:
        raise UserInputError(f"the {split} split of {corpus.name!r} is empty; give the corpus more text")
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(meta["num_tokens"],))
    return TokenArray(ids, meta["num_chars"])


def _write(corpus: Corpus, split: str, tokenizer: Tokenizer, dtype, path: Path, meta_path: Path) -> None:
    num_tokens = num_chars = 0
    bar = tqdm(desc=f"tokenize {split}", unit=" chars", unit_scale=True, delay=2.0)  # shown only if slow
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, bar:
        for chunk in corpus.chunks(split):
            bar.update(len(chunk))
            ids = tokenizer.encode_array(chunk).astype(dtype)
            ids.tofile(fh)
            num_tokens += len(ids)
            num_chars += len(chunk)
    meta = {"num_tokens": num_tokens, "num_chars": num_chars, "corpus": corpus.name, "split": split}
    atomic_write_bytes(meta_path, json.dumps(meta).encode())
