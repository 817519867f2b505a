"""Text classification: the TextClassifier pipeline (a model folder) and the recipe that trains it.

Texts are normalized the way the recipe says (the Keras recipe lowercases and drops the punctuation
Keras' Tokenizer filters), split into words, cut to `max_length` tokens (`truncate="pre"` keeps the end,
as Keras' pad_sequences does) and classified by models.classifier. Everything needed to do that again
at prediction time lives in the folder's config.json.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import __version__
from .data.labelled import LabelledCorpus, open_labelled
from .errors import ModelFolderError, UserInputError, as_texts, check_range
from .models.classifier import ClassifierConfig, TextClassifierModel
from .presets import recipe_from_preset
from .serial import JSONConfig
from .tokenizers import Tokenizer
from .training import TrainConfig, Trainer, check_same_model, pick_device, prepare_out
from .training.metrics import classification_report
from .training.plots import plot_confusion
from .training.tasks import ClassifyTask

MODEL_TYPE = "lstm-classifier"
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_KERAS_RE = re.compile("[" + re.escape(KERAS_FILTERS) + "]")

# Presets: model, text and training settings of well-known recipes (flags override them).
def normalize(text: str, how: str) -> str:
    """"keras": lowercase, Keras' filtered punctuation becomes spaces; "lower": lowercase; "none"."""
    if how == "keras":
        return _KERAS_RE.sub(" ", text.lower())
    return text.lower() if how == "lower" else text


@dataclass
class TextPrep(JSONConfig):
    """How a text becomes ids: normalization, then words, then the cut to max_length tokens."""

    normalize: str = "keras"
    max_length: int = 400
    truncate: str = "pre"  # "pre" keeps the last max_length tokens, "post" the first

    def __post_init__(self) -> None:
        check_range("max_length", self.max_length, 1)
        if self.normalize not in ("keras", "lower", "none"):
            raise UserInputError(f"normalize must be keras, lower or none, got {self.normalize!r}")
        if self.truncate not in ("pre", "post"):
            raise UserInputError(f"truncate must be pre or post, got {self.truncate!r}")

    def ids(self, tokenizer: Tokenizer, text: str) -> List[int]:
        ids = tokenizer.encode(normalize(text, self.normalize).replace("\n", " "))
        ids = [i for i in ids if i != tokenizer.eos_id]
        cut = ids[-self.max_length:] if self.truncate == "pre" else ids[:self.max_length]
        return cut or [tokenizer.unk_id or 0]  # an empty text still gets one token


class TextClassifier:
    """A classifier with its tokenizer and labels: predict, save and load.

    Args:
        model: the TextClassifierModel.
        tokenizer: its word tokenizer.
        labels: the label names, by index.
        prep: how texts become ids.
        info: the rest of config.json (data, training, metrics).
    """

    task = "text-classification"

    def __init__(self, model: TextClassifierModel, tokenizer: Tokenizer, labels: List[str], prep: TextPrep,
                 info: Optional[dict] = None) -> None:
        self.model, self.tokenizer, self.labels, self.prep = model.eval(), tokenizer, list(labels), prep
        self.info = info or {}

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), num_labels) class probabilities."""
        from .training.tasks import pad_batch

        device = next(self.model.parameters()).device
        out = []
        for k in range(0, len(texts), batch_size):
            ids, lengths = pad_batch([self.prep.ids(self.tokenizer, t) for t in texts[k:k + batch_size]])
            logits = self.model(ids.to(device), lengths).float()
            if self.model.config.binary:
                p = torch.sigmoid(logits.squeeze(-1))
                out.append(torch.stack([1 - p, p], -1))
            else:
                out.append(logits.softmax(-1))
        return torch.cat(out).cpu() if out else torch.zeros(0, len(self.labels))

    def predict(self, texts, **options) -> List[dict]:
        """For each text: {"label", "score", "probabilities": {label: p}}.

        Args:
            texts: a text or a list of texts.
            **options: none yet (accepted for the server's uniform call).
        """
        if options:
            raise UserInputError(f"unknown classification option(s): {', '.join(sorted(options))}")
        texts = as_texts(texts)
        probs = self.probabilities(texts)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[best], "score": round(row[best], 6),
                        "probabilities": {lab: round(p, 6) for lab, p in zip(self.labels, row)}})
        return out

    classify = predict  # the server's /v1/classify calls pipeline.classify(texts)

    # -- files -------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "lstmgen_version": __version__, "model": self.model.config.to_dict(),
                "labels": self.labels, "prep": self.prep.to_dict(), "tokenizer": self.tokenizer.kind, **self.info}

    def save_pretrained(self, out_dir) -> Path:
        from .folder import save_folder

        return save_folder(out_dir, self.model, self.tokenizer.hf.to_str(pretty=True), self.config_dict())

    @classmethod
    def from_pretrained(cls, name_or_dir, *, device: Optional[str] = None, backend: Optional[str] = None):
        from .folder import load_weights, open_folder

        d, config = open_folder(name_or_dir)
        try:
            mc = ClassifierConfig.from_dict(dict(config["model"], **({"backend": backend} if backend else {})))
            prep, labels = TextPrep.from_dict(config["prep"]), list(config["labels"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFolderError(f"{d / 'config.json'}: bad classifier settings ({e})") from None
        if len(labels) != mc.num_labels:
            raise ModelFolderError(f"{d / 'config.json'}: {len(labels)} labels but num_labels {mc.num_labels}")
        tokenizer = Tokenizer.load(d / "tokenizer.json")
        if tokenizer.vocab_size != mc.vocab_size:
            raise ModelFolderError(f"{d}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json says "
                                   f"{mc.vocab_size}; the files come from different models")
        model = TextClassifierModel(mc)
        load_weights(model, d / "model.safetensors")
        info = {k: v for k, v in config.items()
                if k not in ("model_type", "lstmgen_version", "model", "labels", "prep", "tokenizer")}
        return cls(model.to(pick_device(device or "cpu")), tokenizer, labels, prep, info)


# -- the recipe ------------------------------------------------------------------------------------------
@dataclass
class ClassifierRecipe:
    """Everything `lstmgen train classify` needs (a preset fills what is not given).

    With `init_from` (a language-model folder), the classifier takes the LM's tokenizer, embedding and
    LSTM (its sizes, one direction) and reads the text as the LM did (no further normalization).
    """

    data: str
    out: str
    vocab_size: int = 20_000
    min_freq: int = 1
    normalize: str = "keras"
    max_length: int = 400
    truncate: str = "pre"
    embed_size: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"
    dropout: float = 0.3
    weight_drop: float = 0.0
    binary: bool = False
    init_from: Optional[str] = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64, max_epochs=4))

    @classmethod
    def from_preset(cls, preset: Optional[str], **overrides) -> "ClassifierRecipe":
        """A recipe from a preset (keras-imdb, bilstm-imdb) with `overrides` (train settings under "train")."""
        return recipe_from_preset(cls, preset, "train classify", **overrides)


def _encode(corpus: LabelledCorpus, split: str, tok: Tokenizer, prep: TextPrep):
    index = {lab: i for i, lab in enumerate(corpus.labels)}
    return [(prep.ids(tok, text), index[label]) for text, label in corpus.splits.get(split, [])]


def train_classifier(recipe: ClassifierRecipe, command: Optional[str] = None,
                     corpus: Optional[LabelledCorpus] = None, *, resume: bool = False) -> Dict:
    """Train a classifier, write its folder, and report valid and test figures.

    Args:
        recipe: data, text, model and training settings.
        command: the command recorded in the model card (default: this process's argv).
        corpus: use these splits instead of opening recipe.data (cross-validation).
        resume: continue the run in recipe.out from its checkpoint (the same settings and data).

    Returns the summary with "metrics" per split (accuracy, macro_f1, confusion, ...).
    """
    corpus = corpus or open_labelled(recipe.data)
    if not corpus.splits.get("train"):
        raise UserInputError(f"{recipe.data}: no training examples")
    out = Path(recipe.out)
    prepare_out(out, resume)  # after the data's errors, so that a mistyped --data leaves no empty folder
    lm = None
    if recipe.init_from:
        from .pipelines import TextGenerator

        lm = TextGenerator.from_pretrained(recipe.init_from)
        prep = TextPrep("none", recipe.max_length, recipe.truncate)
        tok = lm.tokenizer
    else:
        prep = TextPrep(recipe.normalize, recipe.max_length, recipe.truncate)
        tok = Tokenizer.train("word", (normalize(t, recipe.normalize).replace("\n", " ")
                                       for t, _ in corpus.splits["train"]),
                              vocab_size=recipe.vocab_size, min_freq=recipe.min_freq)
    train, valid = _encode(corpus, "train", tok, prep), _encode(corpus, "valid", tok, prep)
    n = len(corpus.labels)
    binary = recipe.binary and n == 2
    sizes = dict(embed_size=recipe.embed_size, hidden_size=recipe.hidden_size, num_layers=recipe.num_layers,
                 bidirectional=recipe.bidirectional)
    if lm is not None:
        lc = lm.model.config
        if lc.top_size != lc.hidden_size:
            raise UserInputError(f"{recipe.init_from}: its last LSTM layer is narrower than the others "
                                 "(last_layer_size); the classifier's layers all have one width")
        sizes = dict(embed_size=lc.embedding_dim, hidden_size=lc.hidden_size, num_layers=lc.num_layers,
                     bidirectional=False)
    mc = ClassifierConfig(vocab_size=tok.vocab_size, num_labels=n, pooling=recipe.pooling, dropout=recipe.dropout,
                          weight_drop=recipe.weight_drop, binary=binary, **sizes)
    cfg = recipe.train
    if cfg.eval_every == TrainConfig().eval_every:  # evaluate once per epoch unless told otherwise
        cfg.eval_every = max(1, -(-len(train) // cfg.batch_size))
    torch.manual_seed(cfg.seed)
    model = TextClassifierModel(mc)
    if lm is not None:
        model.load_language_model(lm.model)
    info = {"num_parameters": model.num_parameters(), "init_from": recipe.init_from,
            "data": {"name": corpus.name, "split_note": corpus.note,
                     **{f"{s}_examples": len(v) for s, v in corpus.splits.items()}},
            "training": {"config": cfg.to_dict(), "device": str(pick_device(cfg.device)),
                         "command": command or "lstmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])}}
    pipe = TextClassifier(model, tok, corpus.labels, prep, info)
    if resume:
        check_same_model(out, pipe.config_dict(), {"tokenizer.json": tok.hf.to_str(pretty=True)})
    task = ClassifyTask(train, valid, cfg, n, binary)
    trainer = Trainer(model, task, None, cfg, out, on_best=lambda best: pipe.save_pretrained(out))
    trainer.continue_run(resume)
    summary = trainer.fit()
    model.cpu().eval()
    metrics = {split: score_examples(pipe, corpus.splits[split]) for split in ("valid", "test")
               if corpus.splits.get(split)}
    info["training"]["summary"] = {k: v for k, v in summary.items() if k != "best"}
    info["metrics"] = metrics
    pipe.info = info
    pipe.save_pretrained(out)
    final = metrics.get("test") or metrics.get("valid")
    if final:
        plot_confusion(final["confusion"], corpus.labels, out / "confusion.png",
                       title=f"{out.name}: {'test' if 'test' in metrics else 'valid'} "
                             f"(accuracy {final['accuracy']:.4f})")
    return {**summary, "metrics": metrics, "out": str(out)}


def score_examples(pipe: TextClassifier, examples: Sequence[Tuple[str, str]]) -> Dict:
    """Accuracy, macro-F1, per-label precision / recall / F1 (in the order of "labels"), the confusion matrix
    and the mean loss (nats) of `pipe` on (text, label) pairs.

    Args:
        pipe: the classifier.
        examples: (text, gold label) pairs; every label must be one of the model's.
    """
    index = {lab: i for i, lab in enumerate(pipe.labels)}
    unknown = sorted({lab for _, lab in examples} - set(index))
    if unknown:
        raise UserInputError(f"label(s) {', '.join(map(repr, unknown[:5]))} of the data are not among the model's "
                             f"({', '.join(pipe.labels)})")
    probs = pipe.probabilities([t for t, _ in examples])
    gold = torch.tensor([index[lab] for _, lab in examples], dtype=torch.long)
    loss = -probs.gather(1, gold[:, None]).clamp_min(1e-12).log().mean()
    return {"labels": pipe.labels, **classification_report(gold, probs.argmax(-1), len(pipe.labels)),
            "loss": float(loss), "examples": len(examples)}


def evaluate_classifier(pipe: TextClassifier, data: str, split: str = "test") -> Dict:
    """The figures of score_examples on a split of `data` (`lstmgen eval DIR --data ...`).

    Args:
        pipe: the classifier.
        data: labelled data (a registry name or file.csv:TEXT:LABEL, as `train classify` takes).
        split: "train", "valid" or "test".
    """
    corpus = open_labelled(data)
    if not corpus.splits.get(split):
        raise UserInputError(f"{data}: no {split} examples")
    return {"data": corpus.name, "split": split, **score_examples(pipe, corpus.splits[split])}


def cross_validate(recipe: ClassifierRecipe, k: int, *, resume: bool = False) -> Dict:
    """k-fold cross-validation: k models, each tested on the fold it did not see (every 10th example of
    the other folds is its validation set, for choosing the best epoch). Folders go to out/fold-i; with
    `resume`, each fold continues from its checkpoint (a finished fold is only scored again).

    Returns {"accuracies": [...], "mean_accuracy": ...}.
    """
    check_range("folds", k, 2)
    corpus = open_labelled(recipe.data)
    accuracies = []
    for f, (rest, held) in enumerate(corpus.folds(k)):
        splits = {"train": [e for i, e in enumerate(rest) if i % 10 != 9],
                  "valid": [e for i, e in enumerate(rest) if i % 10 == 9], "test": held}
        fold = LabelledCorpus(f"{corpus.name} fold {f + 1}/{k}", splits, corpus.labels,
                              f"{k}-fold cross-validation, fold {f + 1}: example i held out when i % {k} == {f}")
        r = train_classifier(ClassifierRecipe(**{**recipe.__dict__, "out": str(Path(recipe.out) / f"fold-{f + 1}")}),
                             corpus=fold, resume=resume)
        accuracies.append(r["metrics"]["test"]["accuracy"])
    return {"accuracies": accuracies, "mean_accuracy": sum(accuracies) / len(accuracies)}
