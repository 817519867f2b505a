"""The work behind `lstmgen train lm` and `lstmgen eval`, callable from Python with the same options."""
from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from tqdm import tqdm

from .chat import check_template
from .data import Corpus, open_corpus, token_cache
from .errors import UserInputError, check_range
from .folder import read_json
from .generation import GenerationConfig
from .models import LanguageModel, LMConfig
from .pipelines import TextGenerator
from .tokenizers import KINDS, Tokenizer
from .training import LOG, TrainConfig, Trainer, evaluate_lm, pick_device, prepare_out
from .training import cache as lm_cache
from .training import dynamic as lm_dynamic
from .training.cache import CacheConfig
from .training.distributed import barrier, init_distributed
from .training.dynamic import DynamicConfig


@dataclass
class LMRecipe:
    """What `lstmgen train lm` builds: data, tokenizer and model settings (training settings are TrainConfig).

    Args:
        data: a `--data` spec.
        out: the model folder to write.
        tokenizer: "char", "word" or "bpe".
        vocab_size: vocabulary size for word and bpe.
        min_freq: rarer words become `<unk>` (word).
        lowercase: lowercase words (word).
        embed_size, hidden_size, num_layers, last_layer_size, dropout, tie_weights: the model (LMConfig).
        dropout_input, dropout_hidden, dropout_output, dropout_embedding, weight_drop, locked_dropout,
            mogrifier_rounds, backend: regularization and the LSTM variant (LMConfig; AWD-LSTM's switches).
        init_from: start from this LM folder's tokenizer and weights (its sizes win; the regularization
            settings here apply): AWD-LSTM's fine-tuning stage, or adapting an LM to new text (ULMFiT).
        valid_fraction: held-out part for sources without an official split.
        encoding_errors: "strict", "replace" or "ignore" for bytes that are not UTF-8.
        save_dtype: "float32" or "float16" for model.safetensors.
        sample_tokens: at every evaluation, print a sample of this many tokens (the model's decoding
            defaults, a fixed seed) and keep it in training_log.jsonl, as char-rnn and textgenrnn show how
            the text improves; 0: none.
        chat_template: a Jinja chat template file for the model folder (chat.py; what
            /v1/chat/completions renders conversations with; default: a plain transcript).
    """

    data: str
    out: str
    tokenizer: str = "char"
    vocab_size: int = 10000
    min_freq: int = 1
    lowercase: bool = False
    embed_size: Optional[int] = None
    hidden_size: int = 512
    num_layers: int = 2
    last_layer_size: Optional[int] = None
    dropout: float = 0.35
    tie_weights: bool = True
    dropout_input: Optional[float] = None
    dropout_hidden: Optional[float] = None
    dropout_output: Optional[float] = None
    dropout_embedding: float = 0.0
    weight_drop: float = 0.0
    locked_dropout: bool = False
    mogrifier_rounds: int = 0
    backend: str = "auto"
    init_from: Optional[str] = None
    valid_fraction: float = 0.1
    encoding_errors: str = "strict"
    save_dtype: str = "float32"
    sample_tokens: int = 100
    chat_template: Optional[str] = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.tokenizer not in KINDS:
            raise UserInputError(f"--tokenizer must be one of {', '.join(KINDS)}, got {self.tokenizer!r}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise UserInputError("--save-dtype must be float32, float16 or bfloat16")
        check_range("sample_tokens", self.sample_tokens, 0)


def _chat_template(path: str) -> str:
    """--chat-template's file, checked to render before any training."""
    try:
        return check_template(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"--chat-template {path}: cannot read it ({e.__class__.__name__})") from None


def _check_space(out: Path, model: LanguageModel) -> None:
    """Fail before training, not at the first checkpoint, when the disk cannot hold the files."""
    weights = 4 * model.num_parameters()
    need = 8 * weights  # checkpoint (weights, best weights, 2 optimizer moments), its temp copy, model folder
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserInputError(f"not enough free space in {out}: {free / 2**20:.0f} MiB free, about "
                             f"{need / 2**20:.0f} MiB needed for checkpoints and the model; free some space "
                             "or choose another --out")


def train_lm(recipe: LMRecipe, *, resume: bool = False, command: Optional[str] = None) -> Dict:
    """Train a language model end to end and write its model folder.

    Args:
        recipe: data, tokenizer, model and training settings.
        resume: continue from the checkpoint in recipe.out.
        command: the command line recorded in the model card (default: this process's argv).

    Returns the summary: steps, minutes, best validation and the final metrics.
    """
    out = Path(recipe.out)
    prepare_out(out, resume)
    # Under torchrun every rank runs this function: rank 0 makes the tokenizer, the others read its file.
    dist = init_distributed(recipe.train.device)
    resuming = resume and (out / "config.json").exists()
    saved_tokenizer = resume and (out / "tokenizer.json").exists()
    barrier(dist)  # every rank has looked at the folder before rank 0 writes to it
    corpus = open_corpus(recipe.data, valid_fraction=recipe.valid_fraction, encoding_errors=recipe.encoding_errors)
    if not any(chunk.strip() for chunk in corpus.chunks("train")):
        raise UserInputError(f"corpus {recipe.data!r} holds only whitespace; give it some text")
    init = TextGenerator.from_pretrained(recipe.init_from) if recipe.init_from and not resuming else None
    if saved_tokenizer:
        tokenizer = Tokenizer.load(out / "tokenizer.json")
    elif init is not None:
        tokenizer = init.tokenizer
    else:
        if dist.main:
            tokenizer = Tokenizer.train(recipe.tokenizer, corpus.chunks("train"), vocab_size=recipe.vocab_size,
                                        min_freq=recipe.min_freq, lowercase=recipe.lowercase)
            if dist.active:
                tokenizer.save(out / "tokenizer.json")
        if dist.active:
            barrier(dist)
            tokenizer = Tokenizer.load(out / "tokenizer.json")
    train_tokens = token_cache(corpus, "train", tokenizer)
    valid_tokens = token_cache(corpus, "valid", tokenizer)
    regularization = {k: getattr(recipe, k) for k in ("dropout", "dropout_input", "dropout_hidden", "dropout_output",
                                                      "dropout_embedding", "weight_drop", "locked_dropout")}
    if resuming:  # a resumed run keeps the model it started with
        lm_config = LMConfig.from_dict(read_json(out / "config.json")["model"])
    elif init is not None:
        (out / LOG).unlink(missing_ok=True)
        lm_config = LMConfig.from_dict({**init.model.config.to_dict(), **regularization})
    else:
        (out / LOG).unlink(missing_ok=True)  # a fresh run starts a fresh log
        lm_config = LMConfig(vocab_size=tokenizer.vocab_size, embed_size=recipe.embed_size,
                             hidden_size=recipe.hidden_size, num_layers=recipe.num_layers,
                             last_layer_size=recipe.last_layer_size, tie_weights=recipe.tie_weights,
                             mogrifier_rounds=recipe.mogrifier_rounds,
                             backend=recipe.backend, **regularization)
    cfg = recipe.train
    torch.manual_seed(cfg.seed)  # the initial weights follow --seed too
    model = LanguageModel(lm_config)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    _check_space(out, model)
    device = pick_device(cfg.device)
    info = {"num_parameters": model.num_parameters(),
            "data": {"name": corpus.name, "split_note": corpus.note, "valid_fraction": recipe.valid_fraction,
                     "train_tokens": len(train_tokens), "valid_tokens": len(valid_tokens)},
            "training": {"config": cfg.to_dict(), "device": str(device),
                         "command": command or "lstmgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])}}
    save_dtype = getattr(torch, recipe.save_dtype)
    pipeline = TextGenerator(model, tokenizer, GenerationConfig(), info)
    if recipe.chat_template:
        pipeline.chat_template = _chat_template(recipe.chat_template)
    elif init is not None:
        pipeline.chat_template = init.chat_template  # fine-tuning keeps the base model's conversation format
    # The folder is complete from the first evaluation on, so a run stopped early still leaves a model.
    trainer = Trainer(model, train_tokens, valid_tokens, cfg, out,
                      on_best=lambda best: pipeline.save_pretrained(out, dtype=save_dtype, card=False),
                      on_eval=_sampler(pipeline, recipe.sample_tokens))
    trainer.continue_run(resume)
    summary = trainer.fit()
    if not dist.main:  # rank 0 scores the model and writes the folder
        return {**summary, "out": str(out)}
    # The carried-state figure over one stream is the most faithful, but it is sequential: past a million
    # tokens the validation split is scored as eval_batch_size streams instead (stated in the metrics).
    streams = 1 if len(valid_tokens) <= 1_000_000 else cfg.eval_batch_size
    metrics = {**evaluate_lm(model, valid_tokens, batch_size=streams, device=trainer.device), "streams": streams}
    info["training"]["summary"] = {k: v for k, v in summary.items() if k != "best"}
    info["metrics"] = {"valid": metrics}
    pipeline.info = info
    model.cpu()
    pipeline.save_pretrained(out, dtype=save_dtype)
    return {**summary, "metrics": metrics, "out": str(out)}


def _sampler(pipeline: TextGenerator, tokens: int):
    """The Trainer's on_eval for a language model: a sample of `tokens` tokens from the start of a paragraph,
    printed above the progress bar and returned for the log (None when tokens is 0)."""
    if not tokens:
        return None

    def sample(step: int, record: Dict) -> Dict:
        text = pipeline.generate("", max_new_tokens=tokens, seed=0).completion
        tqdm.write(f"--- sample at step {step} (valid loss {record.get('valid_loss', float('nan')):.3f}) ---\n"
                   f"{text}\n---", file=sys.stderr)
        return {"sample": text}

    return sample


def evaluate_folder(model_dir: str, data: str, split: str = "valid", *, batch_size: int = 1,
                    window: int = 256, device: str = "auto", encoding_errors: str = "strict",
                    cache: Optional[CacheConfig] = None, tune_cache: bool = False,
                    dynamic: Optional[DynamicConfig] = None, tune_dynamic: bool = False) -> Dict:
    """Loss, perplexity and bits per character of a model folder on `split` of `data`.

    Args:
        model_dir: a model folder or bundled model name.
        data: a `--data` spec.
        split: "valid" or "test" (or "train").
        batch_size: streams for the carried-state figure (1: the split as one sequence).
        window: length of the zero-state windows of the second figure.
        device: "auto", "cpu", "cuda", ...
        cache: also score with the continuous cache (training/cache.py) with these settings.
        tune_cache: choose the cache's theta and lambda on the validation split first (cache.window kept).
        dynamic: also score with dynamic evaluation (training/dynamic.py) with these settings.
        tune_dynamic: choose its lr and lambda on the start of the validation split first.
    """
    check_range("batch_size", batch_size, 1)
    check_range("window", window, 1)
    gen = TextGenerator.from_pretrained(model_dir)
    valid_fraction = (gen.info.get("data") or {}).get("valid_fraction", 0.1)
    corpus: Corpus = open_corpus(data, valid_fraction=valid_fraction, encoding_errors=encoding_errors)
    tokens = token_cache(corpus, split, gen.tokenizer)
    dev = pick_device(device)
    metrics = evaluate_lm(gen.model.to(dev), tokens, batch_size=batch_size, window=window, device=dev)
    out = {"model": str(model_dir), "data": data, "split": split, **metrics}

    def valid_ids():  # the split the post-processing settings are tuned on
        return tokens.ids if split == "valid" else token_cache(corpus, "valid", gen.tokenizer).ids

    if cache is not None or tune_cache:
        out["cache"] = lm_cache.report(gen.model, tokens.ids, cache or CacheConfig(), dev,
                                       tune_ids=valid_ids() if tune_cache else None)
    if dynamic is not None or tune_dynamic:
        train_ids = token_cache(corpus, "train", gen.tokenizer).ids
        out["dynamic"] = lm_dynamic.report(gen.model, tokens.ids, train_ids, dynamic or DynamicConfig(), dev,
                                           tune_ids=valid_ids() if tune_dynamic else None)
    return out


def sample_report(model_dir: str, n: int, *, prompt: str = "", max_new_tokens: int = 500, seed: int = 0,
                  **options) -> Dict:
    """Generate `n` samples (one batch) and measure them: distinct-1/2/3 and the repeated 4-gram rate.

    Args:
        model_dir: a model folder or bundled model name.
        n: number of samples.
        prompt: their common prompt.
        max_new_tokens: tokens per sample.
        seed: the sampling seed.
        **options: further generation options (the model's generation_config.json fills the rest).
    """
    from .generation.quality import sample_quality

    gen = TextGenerator.from_pretrained(model_dir)
    out = gen.generate(prompt, num_return_sequences=n, max_new_tokens=max_new_tokens, seed=seed, **options)
    out = out if isinstance(out, list) else [out]
    return sample_quality([r.completion for r in out])
