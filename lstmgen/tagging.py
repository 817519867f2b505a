"""Named-entity tagging: the Tagger pipeline (a model folder) and the recipe that trains it on CoNLL data.

Words are looked up lowercased with digits as 0 (Lample et al. 2016); the character BiLSTM sees them as
written. The folder's tokenizer.json is a Hugging Face WordLevel tokenizer with that normalization and a
word/punctuation splitter, so raw text gets the same words (and their character offsets) at prediction
time; the character vocabulary and the tags are in config.json.
"""
from __future__ import annotations

import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tokenizers import Regex, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from . import __version__
from .data.conll import Sentence, open_tagged, span_f1, spans, to_scheme, write_conll
from .errors import ModelFolderError, UserInputError, as_texts
from .models.tagger import BiLSTMCRFTagger, TaggerConfig
from .training import TrainConfig, Trainer, check_same_model, pick_device, prepare_out
from .training.tasks import TagTask

MODEL_TYPE = "lstm-tagger"
UNK, PAD = "<unk>", "<pad>"
WORD_PATTERN = r"\w+(?:[-'.]\w+)*|[^\w\s]"  # words (with inner - ' .), or single punctuation marks


def word_tokenizer(words: Sequence[str]) -> HFTokenizer:
    """The words vocabulary as a tokenizers pipeline: lowercase, digits -> 0, split words/punctuation."""
    vocab = {PAD: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(words)}}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    hf.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"\d"), "0")])
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")])
    return hf


def word_key(word: str) -> str:
    return "".join("0" if ch.isdigit() else ch for ch in word.lower())


class Tagger:
    """A BiLSTM-CRF tagger with its vocabularies: tag texts, save and load.

    Args:
        model: the BiLSTMCRFTagger.
        words: the words tokenizer (tokenizers.Tokenizer).
        chars: the character vocabulary (index 0 <pad>, 1 <unk>).
        info: the rest of config.json.
    """

    task = "token-classification"

    def __init__(self, model: BiLSTMCRFTagger, words: HFTokenizer, chars: List[str],
                 info: Optional[dict] = None) -> None:
        self.model, self.words, self.chars = model.eval(), words, list(chars)
        self._char_index = {c: i for i, c in enumerate(self.chars)}
        self.info = info or {}

    @property
    def tags(self) -> List[str]:
        return self.model.config.tags

    def encode(self, tokens: Sequence[str]):
        """(word ids, char ids per word) of pre-split tokens."""
        vocab = self.words.get_vocab()
        word_ids = [vocab.get(word_key(t), 1) for t in tokens]
        char_ids = [[self._char_index.get(ch, 1) for ch in t] or [1] for t in tokens]
        return word_ids, char_ids

    @torch.inference_mode()
    def tag_tokens(self, sentences: Sequence[Sequence[str]]) -> List[List[str]]:
        """Tags for pre-split sentences (lists of tokens)."""
        from .training.tasks import tag_batch

        out: List[List[str]] = []
        device = next(self.model.parameters()).device
        rows = [(*self.encode(s), [0] * len(s)) for s in sentences]
        for k in range(0, len(rows), 64):
            chunk = [r for r in rows[k:k + 64] if r[0]]  # an empty sentence gets no tags
            paths = []
            if chunk:
                words, chars, char_lengths, lengths, _ = tag_batch(chunk)
                paths = self.model.decode(words.to(device), chars.to(device), char_lengths.to(device), lengths)
            paths = iter(paths)
            out += [[self.tags[t] for t in next(paths)] if r[0] else [] for r in rows[k:k + 64]]
        return out

    def tag(self, texts, **options) -> List[dict]:
        """For each text: its tokens, their tags, and the entities as {"text", "label", "start", "end"}
        (character offsets, end exclusive).

        Args:
            texts: a text or a list of texts.
            **options: none yet (accepted for the server's uniform call).
        """
        if options:
            raise UserInputError(f"unknown tagging option(s): {', '.join(sorted(options))}")
        texts = as_texts(texts)
        pieces = [self.words.pre_tokenizer.pre_tokenize_str(t) for t in texts]
        tags = self.tag_tokens([[w for w, _ in p] for p in pieces])
        out = []
        for text, p, tg in zip(texts, pieces, tags):
            ents = [{"text": text[p[a][1][0]:p[b - 1][1][1]], "label": lab, "start": p[a][1][0],
                     "end": p[b - 1][1][1]} for lab, a, b in spans(tg)]
            out.append({"tokens": [w for w, _ in p], "tags": tg, "entities": ents})
        return out

    # -- files -------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "lstmgen_version": __version__, "model": self.model.config.to_dict(),
                "chars": self.chars, "tokenizer": "word", **self.info}

    def save_pretrained(self, out_dir) -> Path:
        from .folder import save_folder

        return save_folder(out_dir, self.model, self.words.to_str(pretty=True), self.config_dict())

    @classmethod
    def from_pretrained(cls, name_or_dir, *, device: Optional[str] = None, backend: Optional[str] = None):
        from .folder import load_weights, open_folder

        d, config = open_folder(name_or_dir)
        try:
            mc = TaggerConfig.from_dict(dict(config["model"], **({"backend": backend} if backend else {})))
            chars = list(config["chars"])
            words = HFTokenizer.from_file(str(d / "tokenizer.json"))
        except Exception as e:  # a missing key, a bad value, or a tokenizer.json the library refuses
            raise ModelFolderError(f"{d}: bad tagger files ({str(e).splitlines()[0]})") from None
        if words.get_vocab_size() != mc.word_vocab or len(chars) != mc.char_vocab:
            raise ModelFolderError(f"{d}: the vocabularies do not match config.json; the files come from "
                                   "different models")
        model = BiLSTMCRFTagger(mc)
        load_weights(model, d / "model.safetensors")
        info = {k: v for k, v in config.items() if k not in ("model_type", "lstmgen_version", "model", "chars",
                                                             "tokenizer")}
        return cls(model.to(pick_device(device or "cpu")), words, chars, info)


# -- the recipe ------------------------------------------------------------------------------------------
@dataclass
class TagRecipe:
    """Everything `lstmgen train tag` needs (defaults: Lample et al.'s sizes, without pretrained vectors)."""

    data: str
    out: str
    scheme: str = "bioes"  # the tags the CRF learns; predictions and scores are converted back to BIO
    word_dim: int = 100
    char_dim: int = 25
    char_hidden: int = 25
    hidden_size: int = 200
    num_layers: int = 1
    dropout: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=16, max_epochs=40, lr=2e-3, optimizer="adamw", weight_decay=0.0, clip=5.0,
        warmup_steps=100, schedule="cosine", eval_batch_size=64))


def _rows(sentences: List[Sentence], pipe: Tagger, scheme: str, tag_index: Dict[str, int]):
    out = []
    for s in sentences:
        w, c = pipe.encode(s.words)
        tags = to_scheme(s.tags, scheme)
        unknown = [t for t in tags if t not in tag_index]
        if unknown:
            raise UserInputError(f"tag {unknown[0]!r} appears only outside the training data; add training "
                                 "sentences with it")
        out.append((w, c, [tag_index[t] for t in tags]))
    return out


def train_tagger(recipe: TagRecipe, command: Optional[str] = None, *, resume: bool = False) -> Dict:
    """Train a tagger, write its folder (with test predictions in CoNLL format), and report entity F1.

    Args:
        recipe: data, model and training settings.
        command: the command recorded in the model card (default: this process's argv).
        resume: continue the run in recipe.out from its checkpoint (the same settings and data).
    """
    if recipe.scheme not in ("bio", "bioes"):
        raise UserInputError(f"scheme must be bio or bioes, got {recipe.scheme!r}")
    splits = open_tagged(recipe.data)
    out = Path(recipe.out)
    prepare_out(out, resume)  # after the data's errors, so that a mistyped --data leaves no empty folder
    train = splits["train"]
    counts = Counter(word_key(w) for s in train for w in s.words)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    chars = [PAD, UNK] + sorted({ch for s in train for w in s.words for ch in w})
    tags = sorted({t for s in train for t in to_scheme(s.tags, recipe.scheme)}, key=lambda t: (t != "O", t[2:], t))
    mc = TaggerConfig(word_vocab=len(words) + 2, char_vocab=len(chars), tags=tags, word_dim=recipe.word_dim,
                      char_dim=recipe.char_dim, char_hidden=recipe.char_hidden, hidden_size=recipe.hidden_size,
                      num_layers=recipe.num_layers, dropout=recipe.dropout)
    cfg = recipe.train
    if cfg.eval_every == TrainConfig().eval_every:
        cfg.eval_every = max(1, -(-len(train) // cfg.batch_size))  # once per epoch
    torch.manual_seed(cfg.seed)
    model = BiLSTMCRFTagger(mc)
    info = {"num_parameters": model.num_parameters(),
            "data": {"name": recipe.data, "split_note": "conll2003: train eng.train, valid eng.testa, test "
                     "eng.testb" if recipe.data == "conll2003" else "sentence i: valid if i % 10 == 8, test if 9",
                     **{f"{k}_sentences": len(v) for k, v in splits.items()}},
            "training": {"config": cfg.to_dict(), "device": str(pick_device(cfg.device)), "scheme": recipe.scheme,
                         "command": command or "lstmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])}}
    pipe = Tagger(model, word_tokenizer(words), chars, info)
    if resume:
        check_same_model(out, pipe.config_dict(), {"tokenizer.json": pipe.words.to_str(pretty=True)})
    index = {t: i for i, t in enumerate(tags)}
    singletons = frozenset(i + 2 for i, w in enumerate(words) if counts[w] == 1)
    task = TagTask(_rows(train, pipe, recipe.scheme, index), _rows(splits["valid"], pipe, recipe.scheme, index),
                   cfg, tags, singletons, unk_id=1)
    trainer = Trainer(model, task, None, cfg, out, on_best=lambda best: pipe.save_pretrained(out))
    trainer.continue_run(resume)
    summary = trainer.fit()
    model.cpu().eval()
    metrics = {}
    for split in ("valid", "test"):
        sents = splits.get(split) or []
        if sents:
            metrics[split], pred = score_sentences(pipe, sents)
            if split == "test":
                write_conll(out / "test_predictions.conll", sents, pred)
    info["training"]["summary"] = {k: v for k, v in summary.items() if k != "best"}
    info["metrics"] = {k: {m: v for m, v in d.items()} for k, d in metrics.items()}
    pipe.info = info
    pipe.save_pretrained(out)
    return {**summary, "metrics": metrics, "out": str(out)}


def score_sentences(pipe: Tagger, sentences: Sequence[Sentence]) -> Tuple[Dict, List[List[str]]]:
    """Entity-level precision, recall and F1 (CoNLL's: a span counts when its type and both ends match),
    overall and per type, of `pipe` on tagged sentences; and its BIO tags for them.

    Args:
        pipe: the tagger.
        sentences: sentences with their gold tags (BIO or BIOES).
    """
    pred = [to_scheme(p, "bio") for p in pipe.tag_tokens([s.words for s in sentences])]
    scores = span_f1([to_scheme(s.tags, "bio") for s in sentences], pred)
    return {**scores, "sentences": len(sentences)}, pred


def evaluate_tagger(pipe: Tagger, data: str, split: str = "test") -> Dict:
    """The figures of score_sentences on a split of `data` (`lstmgen eval DIR --data ...`).

    Args:
        pipe: the tagger.
        data: conll2003 or a CoNLL file, as `train tag` takes.
        split: "train", "valid" or "test".
    """
    sentences = open_tagged(data).get(split)
    if not sentences:
        raise UserInputError(f"{data}: no {split} sentences")
    return {"data": data, "split": split, **score_sentences(pipe, sentences)[0]}
