"""The sequence-to-sequence commands of `lstmgen`: train seq2seq, translate, and eval of a seq2seq folder.

cli.py builds the rest of the parser and dispatches; `add_parsers` adds these commands to it.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .cli_io import input_lines, output_file
from .cli_settings import add_task_training, exit_code, task_settings
from .errors import UserInputError


def _bool(v: str) -> bool:
    return v.lower() in ("1", "true", "yes")


# flag -> (type, help); the settings of Seq2SeqRecipe (None: the preset's or default), and the batch size with
# this task's default; the other training flags are cli_settings.TRAIN_FLAGS.
SEQ2SEQ_FLAGS = {
    "tokenizer": (str, "bpe | word | char (default bpe)"),
    "vocab-size": (int, "vocabulary per side, or of the shared one (default 8000)"),
    "shared-vocab": (_bool, "true: one tokenizer and embedding for both sides (needed for --copy)"),
    "max-source-tokens": (int, "longer sources are cut, with a count (default 400)"),
    "max-target-tokens": (int, "longer training targets are cut, with a count (default 200)"),
    "embed-size": (int, "embedding size (default 256)"),
    "hidden-size": (int, "decoder width; each encoder direction gets half (default 512)"),
    "encoder-layers": (int, "encoder LSTM layers (default 2)"),
    "decoder-layers": (int, "decoder LSTM layers (default 2)"),
    "attention": (str, "general | dot | bahdanau | none (default general)"),
    "input-feed": (_bool, "feed the attentional vector to the next step (default true)"),
    "dropout": (float, "dropout (default 0.3)"),
    "copy": (_bool, "pointer-generator copying (See et al. 2017)"),
    "coverage": (_bool, "coverage vector and loss (bahdanau attention)"),
    "label-smoothing": (float, "label smoothing (default 0.1)"),
    "num-beams": (int, "beam size of the final evaluation and the saved default (default 5)"),
    "length-penalty": (float, "beam score = logprob / length ** length-penalty (default 1.0)"),
    "no-repeat-ngram-size": (int, "block repeated n-grams when decoding (default 0: off)"),
    "eval-examples": (int, "validation pairs decoded greedily at each evaluation (default 500)"),
    "select-by": (str, "loss | metric: keep the weights of the lowest validation loss (default) or of the best "
                       "greedy BLEU / ROUGE-2 / F1 on the validation sample"),
    "batch-size": (int, "pairs per batch (default 64)"),
}


def add_parsers(train_sub, sub) -> None:
    """`train seq2seq` under `lstmgen train`, and `lstmgen translate`."""
    s2s = train_sub.add_parser("seq2seq", help="an attention encoder-decoder (translation, summarization, QA)")
    s2s.add_argument("--data", help="multi30k[:de-en], fra-eng[:en-fr], squad, gigaword, pairs.tsv, pairs.jsonl, "
                                    "or a prefix with --src-lang/--tgt-lang (prefix.de, prefix.en)")
    s2s.add_argument("--src-lang", help="source language (file suffix, or the registry direction)")
    s2s.add_argument("--tgt-lang", help="target language")
    s2s.add_argument("--out", help="the model folder to write (default runs/<preset or data>)")
    s2s.add_argument("--preset", help="multi30k-cpu, multi30k, gigaword-copy or gigaword")
    add_task_training(s2s, SEQ2SEQ_FLAGS)

    tr = sub.add_parser("translate", help="translate (or summarize, answer) texts with a seq2seq folder")
    tr.add_argument("model", help="seq2seq model folder")
    tr.add_argument("texts", nargs="*", help="texts to translate")
    tr.add_argument("--input", help="a file of texts, one per line ('-' reads standard input); one output line "
                                    "per input line")
    tr.add_argument("--num-beams", type=int, help="beam size (default: the model's, usually 5)")
    tr.add_argument("--length-penalty", type=float, help="beam score = logprob / length ** length-penalty")
    tr.add_argument("--no-repeat-ngram-size", type=int, help="never repeat an n-gram of this size")
    tr.add_argument("--max-new-tokens", type=int, help="the longest output")
    tr.add_argument("--min-new-tokens", type=int, help="the shortest output")
    tr.add_argument("--temperature", type=float, help="with --num-beams 1: 0 = greedy, > 0 samples")
    tr.add_argument("--top-p", type=float, help="nucleus sampling mass")
    tr.add_argument("--seed", type=int, help="random seed for sampling")
    tr.add_argument("--attention-plot", help="draw the attention of the first text as a heatmap PNG")
    tr.add_argument("--json", action="store_true", help="one JSON object per text")


def cmd_train_seq2seq(args: argparse.Namespace) -> int:
    from .seq2seq_recipe import Seq2SeqRecipe, train_seq2seq

    given, train = task_settings(args, SEQ2SEQ_FLAGS, Seq2SeqRecipe, "seq2seq",
                                 ("data", "src-lang", "tgt-lang", "out", "preset"))
    preset = given.pop("preset", None)
    if not preset and not given.get("data"):
        raise UserInputError("--data is required (or a --preset that names its data, or data in --config)")
    given.setdefault("out", f"runs/{preset or Path(given['data'].split(':')[0]).stem}")
    recipe = Seq2SeqRecipe.from_preset(preset, train=train, **given)
    result = train_seq2seq(recipe, resume=args.resume)
    for split, m in result["metrics"].items():
        figs = ", ".join(f"{k} {v}" for k, v in m.items() if isinstance(v, (int, float)) and k != "examples")
        print(f"{split}: {figs} ({m['examples']} pairs)")
    sig = next(iter(result["metrics"].values()), {}).get("bleu_signature")
    if sig:
        print(f"sacreBLEU signature: {sig}")
    print(f"model folder: {result['out']}")
    return exit_code(result)


def cmd_translate(args: argparse.Namespace) -> int:
    from .pipelines import load
    from .translation import Translator

    plot = output_file(args.attention_plot, "--attention-plot") if args.attention_plot else None
    pipe = load(args.model)
    if not isinstance(pipe, Translator):
        raise UserInputError(f"{args.model} is not a seq2seq model folder (it is a {pipe.task} model)")
    texts = input_lines(args.texts, args.input, keep_blank=True)  # line i of the output answers line i
    opts = {k: getattr(args, k) for k in ("num_beams", "length_penalty", "no_repeat_ngram_size", "max_new_tokens",
                                          "min_new_tokens", "temperature", "top_p", "seed")}
    opts = {k: v for k, v in opts.items() if v is not None}
    real = [i for i, t in enumerate(texts) if t.strip()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = pipe.translate([texts[i] for i in real], **opts) if real else []
    for w in caught:
        print(f"lstmgen: warning: {w.message}", file=sys.stderr)
    by_line = dict(zip(real, results))
    for i, text in enumerate(texts):
        r = by_line.get(i, {"translation": "", "score": None, "finish_reason": "empty"})
        print(json.dumps({"source": text, **r}, ensure_ascii=False) if args.json else r["translation"])
    if plot and real:
        from .training.plots import plot_attention

        weights, src, tgt = pipe.attention(texts[real[0]], **opts)
        plot_attention(weights.numpy(), src, tgt, plot, title=texts[real[0]][:60])
        print(f"attention plot: {args.attention_plot}", file=sys.stderr)
    return 0


def eval_seq2seq(args: argparse.Namespace, pipe) -> int:
    """`lstmgen eval DIR --data ...` for a seq2seq folder: its figures as JSON."""
    from .seq2seq_recipe import evaluate_seq2seq

    if not args.data:
        raise UserInputError("give --data: the pairs to score the model on")
    opts = {"num_beams": args.num_beams} if args.num_beams else {}
    r = evaluate_seq2seq(pipe, args.data, args.split, args.src_lang, args.tgt_lang, **opts)
    print(json.dumps({"model": args.model, **r}, ensure_ascii=False))
    return 0
