"""The work behind `lstmgen train seq2seq` and `lstmgen eval` of a seq2seq folder, callable from Python.

Presets (configs/multi30k-cpu.toml, gigaword-copy.toml, ...) are the recipes whose figures the README
reports; flags override them.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from .data.parallel import ParallelCorpus, open_parallel
from .errors import UserInputError, check_range
from .generation import GenerationConfig
from .models.seq2seq import Seq2Seq, Seq2SeqConfig
from .presets import recipe_from_preset
from .tokenizers import KINDS, Tokenizer
from .training import TrainConfig, Trainer, check_same_model, pick_device, prepare_out
from .training.tasks import Seq2SeqTask
from .training.textmetrics import text_scores
from .translation import BOS, EOS, TARGET_TOKENIZER, Translator


@dataclass
class Seq2SeqRecipe:
    """Everything `lstmgen train seq2seq` needs (a preset fills what is not given).

    Args:
        data / src_lang / tgt_lang: the pairs (data.parallel).
        out: the model folder.
        tokenizer: "bpe" (default), "word" or "char".
        vocab_size: per side, or of the one shared vocabulary.
        shared_vocab: one tokenizer and one embedding for both sides (needed for copying).
        max_source_tokens / max_target_tokens: longer texts are cut (counted, recorded in config.json).
        embed_size ... coverage: the model (the Seq2SeqConfig fields of the same names).
        label_smoothing / coverage_weight: the loss (Seq2SeqTask).
        num_beams / length_penalty / no_repeat_ngram_size / max_new_tokens: decoding defaults saved with
            the model and used for the final valid/test figures.
        eval_examples: validation pairs decoded greedily at each evaluation for BLEU/ROUGE (0: none).
        select_by: "loss" keeps the weights of the lowest validation loss; "metric" those of the best
            greedy score on the validation sample (BLEU, ROUGE-2 or F1 by task) — better where the loss
            and the score part ways, as with a small summarization set.
    """

    data: str
    out: str
    src_lang: Optional[str] = None
    tgt_lang: Optional[str] = None
    tokenizer: str = "bpe"
    vocab_size: int = 8000
    shared_vocab: bool = False
    max_source_tokens: int = 400
    max_target_tokens: int = 200
    embed_size: int = 256
    hidden_size: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 2
    bidirectional: bool = True
    attention: str = "general"
    input_feed: bool = True
    dropout: float = 0.3
    tie_output: bool = True
    copy: bool = False
    coverage: bool = False
    label_smoothing: float = 0.1
    coverage_weight: float = 1.0
    num_beams: int = 5
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 200
    eval_examples: int = 500
    select_by: str = "loss"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64, max_epochs=10))

    def __post_init__(self) -> None:
        if self.tokenizer not in KINDS:
            raise UserInputError(f"--tokenizer must be one of {', '.join(KINDS)}, got {self.tokenizer!r}")
        for name in ("vocab_size", "max_source_tokens", "max_target_tokens", "num_beams", "max_new_tokens"):
            check_range(name, getattr(self, name), 1)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_range("eval_examples", self.eval_examples, 0)
        if self.select_by not in ("loss", "metric"):
            raise UserInputError(f"--select-by must be loss or metric, got {self.select_by!r}")
        if self.select_by == "metric" and not self.eval_examples:
            raise UserInputError("--select-by metric needs --eval-examples > 0 (the pairs it is measured on)")

    @classmethod
    def from_preset(cls, preset: Optional[str], **overrides) -> "Seq2SeqRecipe":
        """A recipe from a preset with `overrides` (None values ignored; train settings under "train")."""
        return recipe_from_preset(cls, preset, "train seq2seq", **overrides)


def _tokenizers(recipe: Seq2SeqRecipe, corpus: ParallelCorpus):
    pairs = corpus.splits["train"]
    kw = dict(vocab_size=recipe.vocab_size, specials=[BOS, EOS])
    if recipe.shared_vocab:
        tok = Tokenizer.train(recipe.tokenizer, (t for p in pairs for t in p), **kw)
        return tok, tok
    return (Tokenizer.train(recipe.tokenizer, (s for s, _ in pairs), **kw),
            Tokenizer.train(recipe.tokenizer, (t for _, t in pairs), **kw))


def encode_pairs(pipe: Translator, pairs, max_target: int):
    """(source ids, target ids) per pair and how many sources / targets were cut."""
    sources, cut_src = pipe.source_ids([s for s, _ in pairs])
    targets, cut_tgt = [], 0
    for _, t in pairs:
        ids = pipe.tgt_tok.encode(t)
        if len(ids) > max_target:
            ids, cut_tgt = ids[:max_target], cut_tgt + 1
        targets.append(ids)
    return list(zip(sources, targets)), cut_src, cut_tgt


def score_pairs(pipe: Translator, pairs, **options) -> Dict:
    """Decode the sources of `pairs` and score them against the targets (the task's figures), with the
    decoding speed."""
    t0 = time.perf_counter()
    hyps = pipe([s for s, _ in pairs], **options)
    seconds = time.perf_counter() - t0
    out = text_scores(pipe.text_task, hyps, [t for _, t in pairs])
    return {**out, "examples": len(pairs), "sentences_per_s": round(len(pairs) / max(seconds, 1e-9), 1)}


def train_seq2seq(recipe: Seq2SeqRecipe, command: Optional[str] = None, *, resume: bool = False) -> Dict:
    """Train an encoder-decoder, write its folder and report valid and test figures (beam search).

    Args:
        recipe: data, tokenizer, model, loss and training settings.
        command: the command recorded in the model card (default: this process's argv).
        resume: continue the run in recipe.out from its checkpoint (the same settings and data).
    """
    corpus = open_parallel(recipe.data, recipe.src_lang, recipe.tgt_lang)
    if not corpus.splits.get("train"):
        raise UserInputError(f"{recipe.data}: no training pairs")
    out = Path(recipe.out)
    prepare_out(out, resume)  # after the data's errors, so that a mistyped --data leaves no empty folder
    src_tok, tgt_tok = _tokenizers(recipe, corpus)
    shared_fields = {f.name for f in fields(Seq2SeqConfig)} & {f.name for f in fields(Seq2SeqRecipe)}
    mc = Seq2SeqConfig(src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size,
                       share_embeddings=recipe.shared_vocab, **{k: getattr(recipe, k) for k in shared_fields})
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    model = Seq2Seq(mc)
    gen = GenerationConfig(num_beams=recipe.num_beams, length_penalty=recipe.length_penalty, temperature=0.0,
                           no_repeat_ngram_size=recipe.no_repeat_ngram_size, max_new_tokens=recipe.max_new_tokens)
    pipe = Translator(model, src_tok, tgt_tok, gen, corpus.task, recipe.max_source_tokens)
    train, cut_src, cut_tgt = encode_pairs(pipe, corpus.splits["train"], recipe.max_target_tokens)
    valid, _, _ = encode_pairs(pipe, corpus.splits.get("valid", []), recipe.max_target_tokens)
    if cut_src or cut_tgt:
        tqdm.write(f"lstmgen: {cut_src} training sources longer than {recipe.max_source_tokens} tokens and "
                   f"{cut_tgt} targets longer than {recipe.max_target_tokens} were cut", file=sys.stderr)
    sample = corpus.splits.get("valid", [])[:recipe.eval_examples]

    def scorer(m) -> Dict:  # greedy decoding of a validation sample: the figure people watch
        scores = score_pairs(pipe, sample, num_beams=1, no_repeat_ngram_size=0) if sample else {}
        return {f"valid_{k}": v for k, v in scores.items() if isinstance(v, (int, float)) and k != "examples"}

    info = {"num_parameters": model.num_parameters(),
            "data": {"name": corpus.name, "split_note": corpus.note, "src_lang": corpus.src_lang,
                     "tgt_lang": corpus.tgt_lang, **{f"{s}_pairs": len(v) for s, v in corpus.splits.items()},
                     "cut_sources": cut_src, "cut_targets": cut_tgt},
            "training": {"config": cfg.to_dict(), "device": str(pick_device(cfg.device)),
                         "label_smoothing": recipe.label_smoothing, "coverage_weight": recipe.coverage_weight,
                         "command": command or "lstmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])}}
    pipe.info = info
    if resume:
        check_same_model(out, pipe.config_dict(), {"tokenizer.json": src_tok.hf.to_str(pretty=True),
                                                    TARGET_TOKENIZER: tgt_tok.hf.to_str(pretty=True)})
    metric = {"summarization": "valid_rouge2", "question-answering": "valid_f1"}.get(corpus.task, "valid_bleu")
    task = Seq2SeqTask(train, valid, cfg, pipe.bos, pipe.eos, recipe.label_smoothing, recipe.coverage_weight,
                       scorer if recipe.eval_examples else None,
                       select=metric if recipe.select_by == "metric" else "valid_loss")
    trainer = Trainer(model, task, None, cfg, out, on_best=lambda best: pipe.save_pretrained(out))
    trainer.continue_run(resume)
    summary = trainer.fit()
    model.eval()
    metrics = {split: score_pairs(pipe, corpus.splits[split]) for split in ("valid", "test")
               if corpus.splits.get(split)}
    info["training"]["summary"] = {k: v for k, v in summary.items() if k != "best"}
    info["metrics"] = metrics
    pipe.save_pretrained(out)
    return {**summary, "metrics": metrics, "out": str(out)}


def evaluate_seq2seq(pipe: Translator, data: str, split: str = "test", src_lang: Optional[str] = None,
                     tgt_lang: Optional[str] = None, **options) -> Dict:
    """Figures of a Translator on a split of `data` (BLEU/chrF, ROUGE or EM/F1 by the model's task).

    Args:
        pipe: the Translator.
        data / src_lang / tgt_lang: the pairs.
        split: "train", "valid" or "test".
        **options: decoding options (num_beams, ...).
    """
    corpus = open_parallel(data, src_lang, tgt_lang)
    pairs: List = corpus.splits.get(split) or []
    if not pairs:
        raise UserInputError(f"{data}: no {split} pairs")
    return {"data": corpus.name, "split": split, **score_pairs(pipe, pairs, **options)}
