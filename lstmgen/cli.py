"""`lstmgen ...`: the command line. Every command is a thin layer over a Python function.

Settings come from three places, later ones winning: the dataclass defaults, `--config file.toml` (flat
keys or [model]/[train]/[data] tables, named like the flags with - or _), then the flags given.
Errors a user can cause print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import fields
from typing import List, Optional

from . import __version__
from .cli_lm import GEN_FLAGS, LM_FLAGS, SAMPLE_FLAGS, cmd_eval, cmd_generate, cmd_serve, cmd_train_lm
from .cli_seq2seq import cmd_train_seq2seq, cmd_translate
from .cli_settings import add_flags, add_task_training
from .cli_tasks import (
    CLASSIFY_FLAGS,
    TAG_FLAGS,
    cmd_classify,
    cmd_export,
    cmd_inspect,
    cmd_tag,
    cmd_train_classify,
    cmd_train_tag,
)
from .errors import LstmgenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstmgen", description="LSTM text generation: train, sample, evaluate, "
                                     "serve; also text classification and entity tagging.")
    parser.add_argument("--version", action="version", version=f"lstmgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="task", required=True)
    lm = train.add_parser("lm", help="a language model on a corpus")
    lm.add_argument("--data", help="data set name, file, folder, glob, file.csv:column, file.jsonl:field, "
                                   "or sqlite:path.db:SELECT ...")
    lm.add_argument("--out", help="the model folder to write")
    lm.add_argument("--config", help="a TOML file of settings, or a bundled preset's name (awd-lstm-ptb, "
                                     "ptb-medium, ...; flags override it)")
    lm.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_flags(lm, LM_FLAGS)

    cl = train.add_parser("classify", help="a text classifier on labelled texts")
    cl.add_argument("--data", help="imdb, rt-polarity, or file.csv|.tsv|.jsonl:TEXT_FIELD:LABEL_FIELD")
    cl.add_argument("--out", help="the model folder to write (default runs/<preset or data>)")
    cl.add_argument("--preset", help="keras-imdb (the Keras tutorial exactly), bilstm-imdb, or ulmfit (with "
                    "--init-from LM_FOLDER)")
    cl.add_argument("--folds", type=int, help="k-fold cross-validation instead of one run: prints the mean "
                    "accuracy (folders out/fold-i)")
    add_task_training(cl, CLASSIFY_FLAGS)

    tg = train.add_parser("tag", help="a BiLSTM-CRF named-entity tagger on CoNLL data")
    tg.add_argument("--data", help="conll2003, or a CoNLL file (word ... tag per line)")
    tg.add_argument("--out", help="the model folder to write (default runs/tagger)")
    tg.add_argument("--scheme", default=None, help="bioes (default) | bio: the tags the CRF learns")
    add_task_training(tg, TAG_FLAGS)

    from .cli_seq2seq import add_parsers

    add_parsers(train, sub)

    tag_p = sub.add_parser("tag", help="find entities in texts with a tagger folder")
    tag_p.add_argument("model", help="tagger folder")
    tag_p.add_argument("texts", nargs="*", help="texts to tag")
    tag_p.add_argument("--input", help="a file of texts, one per line ('-' reads standard input)")
    tag_p.add_argument("--json", action="store_true", help="one JSON object per text")

    cls_p = sub.add_parser("classify", help="label texts with a classifier folder")
    cls_p.add_argument("model", help="classifier folder")
    cls_p.add_argument("texts", nargs="*", help="texts to classify")
    cls_p.add_argument("--input", help="a file of texts, one per line ('-' reads standard input)")
    cls_p.add_argument("--json", action="store_true", help="one JSON object per text")

    gen = sub.add_parser("generate", help="sample text from a model folder or bundled model")
    gen.add_argument("model", help="model folder or bundled name (e.g. shakespeare-char)")
    gen.add_argument("--prompt", action="append", help="text to continue (repeat for a batch of prompts)")
    gen.add_argument("--prompt-file", help="prompts, one per line ('-' reads standard input)")
    add_flags(gen, GEN_FLAGS)
    gen.add_argument("--num-samples", type=int, dest="num_return_sequences", help="same as --num-return-sequences")
    gen.add_argument("--dtype", choices=["float32", "bfloat16"], help="the weights' type while generating "
                     "(bfloat16: faster on GPUs and on CPUs with AVX512-BF16 or AMX; default float32)")
    out = gen.add_mutually_exclusive_group()
    out.add_argument("--stream", action="store_true", default=None, help="print text as it is made "
                     "(the default on a terminal, for one prompt and one sample)")
    out.add_argument("--no-stream", action="store_false", dest="stream", help="print each text when complete")
    out.add_argument("--json", action="store_true", help="one JSON object per result: prompt, completion, "
                     "finish_reason, token_ids (and logprobs)")

    ev = sub.add_parser("eval", help="loss, perplexity and bits per character on a split (a seq2seq folder: "
                        "BLEU/chrF, ROUGE or exact match as JSON)")
    ev.add_argument("model")
    ev.add_argument("--data", help="score the model on this corpus (a --data spec)")
    ev.add_argument("--samples", type=int, help="also generate N samples and report distinct-1/2/3 and the "
                    "repeated 4-gram rate")
    ev.add_argument("--prompt", default="", help="prompt of the samples (default: none)")
    ev.add_argument("--max-new-tokens", type=int, default=500, help="length of each sample (default 500)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    ev.add_argument("--batch-size", type=int, default=1, help="streams for the carried-state figure (default 1)")
    ev.add_argument("--window", type=int, default=256, help="zero-state window length (default 256)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--encoding-errors", default="strict")
    cache = ev.add_argument_group("continuous cache (Grave et al. 2017; AWD-LSTM's pointer.py): the model's recent "
                                  "hidden states point at recent words; any of these turns it on")
    cache.add_argument("--cache", action="store_true", help="also score --data with the cache")
    cache.add_argument("--cache-window", type=int, help="previous positions it holds (default 500)")
    cache.add_argument("--cache-theta", type=float, help="sharpness of its attention (default 1.0)")
    cache.add_argument("--cache-lambda", type=float, help="its weight in the mixture (default 0.1)")
    cache.add_argument("--cache-tune", action="store_true",
                       help="choose theta and lambda on the valid split first (a grid), then score --split")
    dyn = ev.add_argument_group("dynamic evaluation (Krause et al. 2018): the model takes a gradient step on each "
                                "segment after scoring it; any of these turns it on")
    dyn.add_argument("--dynamic", action="store_true", help="also score --data with dynamic evaluation")
    dyn.add_argument("--dynamic-lr", type=float, help="eta, the RMS-normalised step (default 1.2e-4)")
    dyn.add_argument("--dynamic-lambda", type=float, help="decay toward the trained weights (default 0.02)")
    dyn.add_argument("--dynamic-bptt", type=int, help="tokens per segment, one update each (default 20)")
    dyn.add_argument("--dynamic-stat-tokens", type=int,
                     help="training tokens for the gradient statistics (default: all)")
    dyn.add_argument("--dynamic-tune", action="store_true",
                     help="choose lr and lambda on the first 10,000 valid tokens first (a grid), then score --split")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--num-beams", type=int, help="seq2seq: beam size (default: the model's)")
    sampling = ev.add_argument_group("decoding options of the --samples (default: the model's)")
    add_flags(sampling, {k: GEN_FLAGS[k] for k in SAMPLE_FLAGS})
    ev.add_argument("--src-lang", help="seq2seq: source language of --data")
    ev.add_argument("--tgt-lang", help="seq2seq: target language of --data")

    srv = sub.add_parser("serve", help="an HTTP server: OpenAI-compatible API, playground, metrics")
    srv.add_argument("models", nargs="*", help="model folders or bundled names (the bundled models are "
                     "always served unless --no-bundled)")
    srv.add_argument("--no-bundled", action="store_true", help="serve only the models given")
    srv.add_argument("--device", default="cpu")
    srv.add_argument("--dtype", choices=["float32", "bfloat16"], help="the language models' weights (bfloat16: "
                     "faster on GPUs and on CPUs with AVX512-BF16 or AMX; default float32)")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    from .server.config import ServerConfig

    for f in fields(ServerConfig):
        srv.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                         help=f"default {f.default}")

    ins = sub.add_parser("inspect", help="an HTML report of gate and cell activations over a text")
    ins.add_argument("model", help="model folder or bundled name")
    src = ins.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to read")
    src.add_argument("--text-file", help="read the text from this file ('-': standard input)")
    ins.add_argument("--out", default="report.html", help="the HTML report (default report.html)")
    ins.add_argument("--png", help="also a PNG of the best cells")
    ins.add_argument("--cells", help="cells to show besides those found, as layer:unit pairs (1:37,0:12)")
    ins.add_argument("--top", type=int, default=6, help="how many found cells to show (default 6)")

    exp = sub.add_parser("export", help="write a model in another format").add_subparsers(dest="format",
                                                                                         required=True)
    onnx_p = exp.add_parser("onnx", help="one ONNX graph that prefills and decodes (input_ids, h0, c0 -> "
                            "logits, h_n, c_n); the tokenizer rides in its metadata")
    onnx_p.add_argument("model", help="model folder or bundled name")
    onnx_p.add_argument("out", help="the .onnx file to write")

    ds = sub.add_parser("datasets", help="the data set registry")
    dsub = ds.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="known data sets")
    info = dsub.add_parser("info", help="files, splits, source and where it is found")
    info.add_argument("name")
    dl = dsub.add_parser("download", help="fetch into the user cache (sha256 checked)")
    dl.add_argument("name")
    return parser


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import registry

    if args.action == "list":
        for ds in registry.REGISTRY.values():
            print(f"{ds.name:16} {ds.task:18} {ds.description}")
        return 0
    ds = registry.get_dataset(args.name)
    if args.action == "download":
        for f in ds.files:
            path = registry.find_file(ds, f.name)
            registry.verify_file(ds, f.name, path)
            print(f"{f.name}: {path} (sha256 ok)")
        return 0
    print(f"{ds.name}: {ds.description}\n  task: {ds.task}\n  source: {ds.source}\n  license: {ds.license}")
    print(f"  splits: {ds.split_note}")
    for split, rule in ds.splits.items():
        desc = rule if isinstance(rule, str) else f"{rule[0]} bytes {rule[1]:.0%}-{rule[2]:.0%}"
        print(f"    {split}: {desc}")
    for f in ds.files:
        try:
            where = str(registry.find_file(ds, f.name, download=False))
        except LstmgenError:
            where = "not local" + (f" (download: {f.url})" if f.url else "")
        print(f"  {f.name}  sha256 {f.sha256}\n    {where}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a `texts` list only from the words before the first option, so in `lstmgen translate DIR
    # --num-beams 5 "Ein Mann"` the text would be refused: words after the options are texts too.
    if extra and isinstance(getattr(args, "texts", None), list) and not any(e.startswith("-") for e in extra):
        args.texts += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "train" and args.task in ("classify", "tag", "seq2seq"):
        args.command = f"train-{args.task}"
    handler = {"train": cmd_train_lm, "train-classify": cmd_train_classify, "classify": cmd_classify,
               "train-tag": cmd_train_tag, "tag": cmd_tag, "train-seq2seq": cmd_train_seq2seq,
               "translate": cmd_translate,
               "generate": cmd_generate, "eval": cmd_eval, "serve": cmd_serve, "inspect": cmd_inspect,
               "export": cmd_export, "datasets": cmd_datasets}
    # What is alive now (torch's modules, ~180k objects) lives as long as the process: moved out of the
    # garbage collector's sight, a full collection no longer walks it. Decoding a batch of 1,024 rows set
    # one off every second run of 500 tokens, 75 ms each, more than the GPU's time for the run.
    gc.freeze()
    try:
        code = handler[args.command](args)
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not in a message at exit
        return code
    except LstmgenError as e:
        print(f"lstmgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lstmgen generate ... | head`): stop quietly, as other Unix tools do, and keep
        # Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, a shell's code for a writer whose pipe closed
