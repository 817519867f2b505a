"""Character, word and byte-level BPE tokenizers, each saved as one Hugging Face `tokenizer.json`.

The three kinds are pipelines of the `tokenizers` library's own parts, so the saved file opens in that
library (and in transformers' PreTrainedTokenizerFast) unchanged:

- char: every Unicode code point is a token (WordLevel model over an "isolate every character" split,
  Fuse decoder). decode(encode(x)) == x for any text whose characters were seen in training; unseen
  characters become `<unk>`, decoded as U+FFFD.
- word: whitespace-separated words (WordLevel, optional Lowercase normalizer); a line break is the token
  `<eos>`, as in the PTB files. Normalisation: runs of spaces and tabs become one space, spaces at line
  ends vanish, and with lowercase=True the text is lowercased. Words below min_freq become `<unk>`.
- bpe: byte-level BPE (GPT-2's scheme), so no input is ever unknown and decode(encode(x)) == x exactly.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence

import numpy as np
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .errors import ModelFolderError, UserInputError

KINDS = ("char", "word", "bpe")
# Just before a line break that is followed by a non-space character: always a pre-token boundary of the
# GPT-2 split, and the whitespace before it ends its own pre-token there too (the split's `\s+(?!\S)`
# leaves a run's last character to the next pre-token), so pieces cut here encode as the whole text does.
_LINE_START = re.compile(r"(?=\n\S)")
UNK, EOS = "<unk>", "<eos>"


class Tokenizer:
    """A trained tokenizer: `encode(text) -> ids`, `decode(ids) -> text`, `save(path)`, `load(path)`.

    Args:
        hf: the underlying `tokenizers.Tokenizer`.
        kind: "char", "word" or "bpe".
    """

    def __init__(self, hf: HFTokenizer, kind: str) -> None:
        self.hf, self.kind = hf, kind
        vocab = hf.get_vocab(with_added_tokens=True)
        self._id_to_token: List[str] = [""] * len(vocab)
        for tok, i in vocab.items():
            self._id_to_token[i] = tok
        self._vocab = vocab
        self.unk_id = vocab.get(UNK)
        self._table = None  # char: code point -> id, built on first use
        # char: id -> its text, <unk> shown as U+FFFD (decoding a 1,024-row batch's blocks is one map each)
        self._texts = ["\ufffd" if i == self.unk_id else t for i, t in enumerate(self._id_to_token)]
        self.eos_id = vocab.get(EOS)

    # -- training ----------------------------------------------------------------------------------
    @classmethod
    def train(cls, kind: str, texts: Iterable[str], *, vocab_size: int = 10000, min_freq: int = 1,
              lowercase: bool = False, specials: Sequence[str] = ()) -> "Tokenizer":
        """Learn a vocabulary from an iterable of text chunks (streamed: the corpus never sits in memory).

        Args:
            kind: "char", "word" or "bpe".
            texts: chunks of the training text, in order.
            vocab_size: the largest vocabulary for word and bpe (char keeps every character seen).
            min_freq: words or characters seen fewer times become `<unk>` (char, word).
            lowercase: lowercase before splitting (word only).
            specials: extra tokens with their own ids, never split and never learned from the text (a
                sequence-to-sequence target's `<s>` and `</s>`).
        """
        if kind not in KINDS:
            raise UserInputError(f"tokenizer must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "bpe":
            return cls(_train_bpe(texts, vocab_size, min_freq, specials), "bpe")
        counts: Counter = Counter()
        for chunk in texts:
            if kind == "char":  # count code points in C: hundreds of megabytes in seconds
                n = np.bincount(np.frombuffer(chunk.encode("utf-32-le", "surrogatepass"), np.uint32))
                counts.update({chr(c): int(n[c]) for c in np.flatnonzero(n).tolist()})
            else:
                counts.update(_word_pieces(chunk.lower() if lowercase else chunk))
        if kind == "char":
            keep = sorted(c for c, n in counts.items() if n >= min_freq)
            vocab = {UNK: 0, **{c: i + 1 for i, c in enumerate(keep)}}
            vocab.update({t: len(vocab) + i for i, t in enumerate(specials)})
        else:
            # Corpora like PTB already spell rare words `<unk>`: that is our own special token, not a word.
            counts.pop(EOS, None)
            counts.pop(UNK, None)
            for tok in specials:
                counts.pop(tok, None)
            ranked = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
            room = max(0, vocab_size - 2 - len(specials))
            if len(ranked) > room:  # words left out become <unk>: perplexity is then over a smaller vocabulary
                lost = sum(counts[w] for w in ranked[room:]) / max(1, sum(counts.values()))
                print(f"lstmgen: the word vocabulary keeps {room:,} of {len(ranked):,} words; the other "
                      f"{lost:.1%} of the training words become <unk>, so perplexities are not comparable with "
                      f"figures over the full vocabulary (raise --vocab-size to keep them)", file=sys.stderr)
            ranked = ranked[:room]
            vocab = {UNK: 0, EOS: 1, **{t: i + 2 for i, t in enumerate(specials)}}
            vocab.update({w: len(vocab) + i for i, w in enumerate(ranked)})
        return cls(_wordlevel(kind, vocab, lowercase, specials), kind)

    # -- use -----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def encode(self, text: str) -> List[int]:
        """Token ids of `text`."""
        if self.kind == "char":
            return self.encode_array(text).tolist()
        if self.kind == "word":
            return self.hf.encode(text, add_special_tokens=False).ids
        # Byte-level BPE: encode lines in parallel, cut where the ids stay those of the whole text.
        lines = _LINE_START.split(text)
        if len(lines) <= 1:
            return self.hf.encode(text, add_special_tokens=False).ids
        return [i for enc in self.hf.encode_batch(lines, add_special_tokens=False) for i in enc.ids]

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of `text` as an int64 array (what token caches store).

        Characters go through a code-point lookup table: the same ids as the HF pipeline (tested), about
        50x faster, so corpora of hundreds of megabytes tokenize in seconds.
        """
        if self.kind != "char":
            return np.asarray(self.encode(text), dtype=np.int64)
        if self._table is None:
            self._table = np.full(0x110000, self.unk_id, dtype=np.int64)
            for tok, i in self._vocab.items():
                if len(tok) == 1:
                    self._table[ord(tok)] = i
        return self._table[np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (see the module docstring for what round-trips exactly)."""
        if self.kind == "char":
            return "".join(map(self._texts.__getitem__, ids))
        if self.kind == "word":
            out: List[str] = []
            for i in ids:
                tok = self._id_to_token[i]
                if tok == EOS:
                    out.append("\n")
                else:
                    if out and out[-1] != "\n":
                        out.append(" ")
                    out.append(tok)
            return "".join(out)
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        return self._id_to_token[i]

    def token_to_id(self, token: str):
        return self._vocab.get(token)

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write `tokenizer.json` (the `tokenizers` library's format)."""
        Path(path).write_text(self.hf.to_str(pretty=True), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a `tokenizer.json` written by `save` (the kind is recognised from its pipeline)."""
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
            spec = json.loads(raw)
            hf = HFTokenizer.from_str(raw)
        except FileNotFoundError:
            raise
        except Exception as e:  # the library's own parse errors are not user-friendly; name the file
            raise ModelFolderError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]}); "
                                   "re-save it with lstmgen") from None
        return cls(hf, _kind_of(spec))


def _word_pieces(text: str) -> Iterator[str]:
    """The word tokenizer's split, in Python for counting: words, with `<eos>` for each line break."""
    for line in text.split("\n")[:-1]:
        yield from line.split()
        yield EOS
    yield from text.split("\n")[-1].split()


def _wordlevel(kind: str, vocab: dict, lowercase: bool, specials: Sequence[str] = ()) -> HFTokenizer:
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    if kind == "char":
        # Isolate every code point, newlines included ([\s\S] rather than ., which skips "\n").
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
    else:
        norm = [normalizers.Replace("\n", f" {EOS} ")]
        if lowercase:
            norm.append(normalizers.Lowercase())
        hf.normalizer = normalizers.Sequence(norm)
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    hf.add_special_tokens(([UNK] if kind == "char" else [UNK, EOS]) + list(specials))
    return hf


def _train_bpe(texts: Iterable[str], vocab_size: int, min_freq: int, specials: Sequence[str] = ()) -> HFTokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=list(specials))
    hf.train_from_iterator(texts, trainer=trainer)
    return hf


def _kind_of(spec: dict) -> str:
    model = (spec.get("model") or {}).get("type")
    if model == "BPE":
        return "bpe"
    if model == "WordLevel":
        return "char" if (spec.get("decoder") or {}).get("type") == "Fuse" else "word"
    raise ModelFolderError(f"tokenizer.json has model type {model!r}; lstmgen reads WordLevel (char, word) "
                           "and BPE tokenizers")
