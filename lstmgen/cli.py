"""`lstmgen ...`: the command line. Every command is a thin layer over a Python function.

Settings come from three places, later ones winning: the dataclass defaults, `--config file.toml` (flat
keys or [model]/[train]/[data] tables, named like the flags with - or _), then the flags given.
Errors a user can cause print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import List, Optional

from . import __version__
from .cli_seq2seq import cmd_train_seq2seq, cmd_translate
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
from .errors import LstmgenError, UserInputError
from .training.distributed import shutdown_distributed

# flag -> (type, help); all default to None so that "not given" is visible and the TOML can fill it.
LM_FLAGS = {
    "tokenizer": (str, "char | word | bpe (default char)"),
    "vocab-size": (int, "vocabulary size for word and bpe (default 10000)"),
    "min-freq": (int, "rarer words become <unk> (word; default 1)"),
    "lowercase": ("flag", "lowercase words (word tokenizer)"),
    "embed-size": (int, "embedding size (default: the hidden size)"),
    "hidden-size": (int, "LSTM hidden size (default 512)"),
    "num-layers": (int, "LSTM layers (default 2)"),
    "dropout": (float, "dropout (default 0.35)"),
    "no-tie-weights": ("flag", "do not share the embedding with the output layer"),
    "dropout-input": (float, "dropout on the embedded input (default: --dropout)"),
    "dropout-hidden": (float, "dropout between LSTM layers (default: --dropout)"),
    "dropout-output": (float, "dropout on the last LSTM output (default: --dropout)"),
    "dropout-embedding": (float, "drop whole words from the embedding (AWD-LSTM 0.1; default 0)"),
    "weight-drop": (float, "DropConnect on the hidden-to-hidden weights (AWD-LSTM 0.5; default 0)"),
    "locked-dropout": ("flag", "one dropout mask per sequence (variational dropout, AWD-LSTM)"),
    "mogrifier-rounds": (int, "Mogrifier LSTM rounds (needs --backend reference; default 0)"),
    "last-layer-size": (int, "units of the top LSTM layer (AWD-LSTM: the embedding size; default --hidden-size)"),
    "backend": (str, "auto | fused | reference (the equations; default auto)"),
    "init-from": (str, "start from this LM folder's tokenizer and weights (fine-tuning)"),
    "valid-fraction": (float, "held-out part for sources without a split (default 0.1)"),
    "encoding-errors": (str, "strict | replace | ignore for bytes that are not UTF-8 (default strict)"),
    "save-dtype": (str, "float32 | float16 for model.safetensors (default float32)"),
    "batch-size": (int, "parallel streams per step (default 32)"),
    "bptt": (int, "truncated-BPTT window (default 128)"),
    "lr": (float, "peak learning rate (default 2e-3)"),
    "optimizer": (str, "adamw | sgd | ntasgd | asgd | rmsprop (default adamw)"),
    "momentum": (float, "SGD momentum (default 0.9)"),
    "beta1": (float, "AdamW's gradient-mean decay (default 0.9; 0: no momentum, as Melis et al. trained LSTM LMs)"),
    "beta2": (float, "AdamW's squared-gradient decay (default 0.99)"),
    "nonmono": (int, "NT-ASGD: averaging starts after this many validations without a new best (default 5)"),
    "ar": (float, "activation regularization (AWD-LSTM 2; default 0)"),
    "tar": (float, "temporal activation regularization (AWD-LSTM 1; default 0)"),
    "variable-bptt": ("flag", "random window lengths around --bptt (AWD-LSTM)"),
    "min-lr-ratio": (float, "cosine schedule floor as a fraction of --lr (default 0.05)"),
    "weight-decay": (float, "weight decay (default 0.1)"),
    "warmup-steps": (int, "linear warm-up steps (default 100)"),
    "schedule": (str, "cosine | constant (default cosine)"),
    "clip": (float, "gradient-norm clip, 0 = off (default 1.0)"),
    "max-steps": (int, "stop after N steps"),
    "max-epochs": (float, "stop after N epochs (default 10 when no budget is given)"),
    "max-minutes": (float, "stop after N minutes of training"),
    "eval-every": (int, "steps between validations and checkpoints (default 250)"),
    "checkpoint-every": (int, "steps between checkpoints, if rarer than validations (default: each validation)"),
    "patience": (int, "early stopping: validations without improvement"),
    "eval-batch-size": (int, "streams the validation text is cut into when scored (AWD-LSTM: 10; default 10)"),
    "max-bad-steps": (int, "non-finite steps in a row (each skipped) before rolling back (default 5)"),
    "log-every": (int, "steps between log lines (default 25)"),
    "seed": (int, "random seed (default 1337)"),
    "device": (str, "auto | cpu | cuda | cuda:N | mps (default auto)"),
    "no-amp": ("flag", "no bf16 autocast on CUDA"),
    "cpu-amp": ("flag", "bf16 autocast on the CPU too: faster on CPUs with AVX512-BF16 or AMX for hidden sizes "
                        "up to ~1150 (slower for 2048)"),
    "compile": ("flag", "torch.compile the parts around the LSTM (compiles for seconds to a minute first)"),
}


GEN_FLAGS = {
    "max-new-tokens": (int, "the most tokens to generate"),
    "min-new-tokens": (int, "no end or stop before this many tokens"),
    "temperature": (float, "softmax temperature, 0 = greedy"),
    "top-k": (int, "sample among the k most likely tokens"),
    "top-p": (float, "nucleus sampling mass, in (0, 1]"),
    "min-p": (float, "drop tokens below min-p x the top probability"),
    "typical-p": (float, "locally typical sampling mass, in (0, 1]"),
    "repetition-penalty": (float, "CTRL repetition penalty (> 1 repeats less)"),
    "presence-penalty": (float, "OpenAI presence penalty, -2..2"),
    "frequency-penalty": (float, "OpenAI frequency penalty, -2..2"),
    "no-repeat-ngram-size": (int, "never repeat an n-gram of this size"),
    "bad-words": ("list", "strings that must not appear"),
    "logit-bias": (str, 'JSON object token id -> bias, e.g. \'{"13": -100}\''),
    "num-beams": (int, "beam search with this many beams"),
    "length-penalty": (float, "beam score = logprob / length ** length-penalty"),
    "num-return-sequences": (int, "sequences per prompt"),
    "stop": ("list", "strings that end the text (the text ends before them)"),
    "max-time": (float, "seconds after which generation stops"),
    "seed": (int, "random seed: the same seed gives the same text"),
    "eos-token-id": (int, "token id that ends a sequence"),
    "logprobs": ("flag", "include per-token log-probabilities (with --json)"),
    "top-logprobs": (int, "with --logprobs: also the N most likely tokens at each step, 0-20 (with --json)"),
    "no-early-stopping": ("flag", "beam search: run every beam to the end"),
}


def _add_flags(p: argparse.ArgumentParser, flags: dict) -> None:
    for name, (typ, help_) in flags.items():
        if typ == "flag":
            p.add_argument(f"--{name}", action="store_true", default=None, help=help_)
        elif typ == "list":
            p.add_argument(f"--{name}", action="append", default=None, help=help_ + " (repeatable)")
        else:
            p.add_argument(f"--{name}", type=typ, default=None, help=help_)


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
    _add_flags(lm, LM_FLAGS)

    cl = train.add_parser("classify", help="a text classifier on labelled texts")
    cl.add_argument("--data", required=True, help="imdb, rt-polarity, or file.csv|.tsv|.jsonl:TEXT_FIELD:LABEL_FIELD")
    cl.add_argument("--out", help="the model folder to write (default runs/<preset or data>)")
    cl.add_argument("--preset", help="keras-imdb (the Keras tutorial exactly), bilstm-imdb, or ulmfit (with "
                    "--init-from LM_FOLDER)")
    cl.add_argument("--folds", type=int, help="k-fold cross-validation instead of one run: prints the mean "
                    "accuracy (folders out/fold-i)")
    _add_flags(cl, CLASSIFY_FLAGS)

    tg = train.add_parser("tag", help="a BiLSTM-CRF named-entity tagger on CoNLL data")
    tg.add_argument("--data", required=True, help="conll2003, or a CoNLL file (word ... tag per line)")
    tg.add_argument("--out", help="the model folder to write (default runs/tagger)")
    tg.add_argument("--scheme", default=None, help="bioes (default) | bio: the tags the CRF learns")
    _add_flags(tg, TAG_FLAGS)

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
    _add_flags(gen, GEN_FLAGS)
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
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--num-beams", type=int, help="seq2seq: beam size (default: the model's)")
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


def _settings(args: argparse.Namespace) -> dict:
    """TOML settings overlaid with the flags given, keys with underscores."""
    merged: dict = {}
    if args.config:
        from .recipes import load_toml

        for key, val in load_toml(args.config).items():
            if isinstance(val, dict):  # [model], [train], [data] tables
                merged.update({k.replace("-", "_"): v for k, v in val.items()})
            else:
                merged[key.replace("-", "_")] = val
    for key, val in vars(args).items():
        if val is not None and key not in ("command", "task", "config", "resume"):
            merged[key] = val
    if merged.pop("no_tie_weights", False):
        merged["tie_weights"] = False
    if merged.pop("no_amp", False):
        merged["amp"] = False
    return merged


def cmd_train_lm(args: argparse.Namespace) -> int:
    from .recipes import LMRecipe, train_lm
    from .training import TrainConfig

    s = _settings(args)
    train_keys = {f.name for f in fields(TrainConfig)}
    recipe_keys = {f.name for f in fields(LMRecipe)} - {"train"}
    unknown = set(s) - train_keys - recipe_keys
    if unknown:
        raise UserInputError(f"unknown setting(s) {', '.join(sorted(unknown))} in --config; see lstmgen train lm -h")
    for required in ("data", "out"):
        if not s.get(required):
            raise UserInputError(f"--{required} is required (or set {required} in --config)")
    recipe = LMRecipe(**{k: v for k, v in s.items() if k in recipe_keys},
                      train=TrainConfig(**{k: v for k, v in s.items() if k in train_keys}))
    result = train_lm(recipe, resume=args.resume)
    shutdown_distributed()
    if "metrics" not in result:  # another rank than 0 under torchrun: rank 0 reports
        return 130 if result["interrupted"] else 0
    m = result["metrics"]
    print(f"saved {result['out']}  ({result['steps']} steps, {result['epochs']} epochs, {result['minutes']} min)")
    print(f"valid: loss {m['loss']:.4f} (ppl {m['perplexity']:.2f}, {m['bpc']:.3f} bpc), "
          f"256-window zero-state loss {m['window256_loss']:.4f}")
    if result["interrupted"]:
        print("lstmgen: interrupted; checkpoint saved — continue with the same command plus --resume",
              file=sys.stderr)
        return 130
    return 0


def _read_prompts(args: argparse.Namespace) -> List[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file:
        if args.prompt_file == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(args.prompt_file, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as e:
                raise UserInputError(f"--prompt-file {args.prompt_file}: {e.strerror}; check the path") from None
            except UnicodeDecodeError as e:
                raise UserInputError(f"--prompt-file {args.prompt_file}: not UTF-8 at byte {e.start}") from None
        prompts += [line for line in text.splitlines() if line.strip()]
    elif not prompts and not sys.stdin.isatty():
        prompts.append(sys.stdin.read())
    return prompts or [""]


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipelines import load

    opts = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in GEN_FLAGS}
    if opts.pop("no_early_stopping"):
        opts["early_stopping"] = False
    opts["num_return_sequences"] = args.num_return_sequences
    if opts["logit_bias"] is not None:
        try:
            opts["logit_bias"] = json.loads(opts["logit_bias"])
        except json.JSONDecodeError:
            raise UserInputError('--logit-bias must be a JSON object, e.g. \'{"13": -100}\'') from None
    prompts = _read_prompts(args)
    gen = load(args.model, **({"dtype": args.dtype} if args.dtype else {}))
    single = len(prompts) == 1 and (args.num_return_sequences or 1) == 1 and (args.num_beams or 1) == 1
    stream = args.stream if args.stream is not None else (sys.stdout.isatty() and not args.json)
    if stream and single:
        sys.stdout.write(prompts[0])
        for piece in gen.stream(prompts[0], **opts):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    results = gen.generate(prompts if len(prompts) > 1 else prompts[0], **opts)
    results = results if isinstance(results, list) else [results]
    for i, r in enumerate(results):
        if args.json:
            rec = {"prompt": r.prompt, "completion": r.completion, "finish_reason": r.finish_reason,
                   "token_ids": r.token_ids}
            if r.logprobs is not None:
                rec["logprobs"] = r.logprobs
            if r.top_logprobs:  # per step, token text -> log-probability (OpenAI's completions form)
                dec = gen.tokenizer.decode
                rec["top_logprobs"] = [{dec([i]): v for i, v in step.items()} for step in r.top_logprobs]
            print(json.dumps(rec, ensure_ascii=False))
        else:
            print(("\n---\n" if i else "") + r.text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .folder import read_json, resolve_model_dir
    from .recipes import evaluate_folder, sample_report

    folder = resolve_model_dir(args.model)
    if (folder / "config.json").is_file() and read_json(folder / "config.json").get("model_type") == "lstm-seq2seq":
        from .cli_seq2seq import eval_seq2seq
        from .pipelines import load

        return eval_seq2seq(args, load(folder, device=None if args.device == "auto" else args.device))
    if not args.data and not args.samples:
        raise UserInputError("give --data to score a corpus, --samples N to measure generated text, or both")
    r: dict = {"model": args.model}
    if args.data:
        r.update(evaluate_folder(args.model, args.data, args.split, batch_size=args.batch_size, window=args.window,
                                 device=args.device, encoding_errors=args.encoding_errors))
    if args.samples:
        r["sample_quality"] = sample_report(args.model, args.samples, prompt=args.prompt,
                                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.json:
        print(json.dumps(r))
        return 0
    if args.data:
        w = args.window
        print(f"{args.model} on {args.data} [{args.split}], {r['tokens']:,} tokens")
        print(f"  carried state : loss {r['loss']:.4f}  perplexity {r['perplexity']:.3f}  bits/char {r['bpc']:.4f}")
        print(f"  {w}-token windows from zero state: loss {r[f'window{w}_loss']:.4f}  "
              f"perplexity {r[f'window{w}_perplexity']:.3f}  bits/char {r[f'window{w}_bpc']:.4f}")
    if args.samples:
        q = r["sample_quality"]
        print(f"{q['samples']} samples of {args.max_new_tokens} tokens: distinct-1 {q['distinct_1']:.3f}  "
              f"distinct-2 {q['distinct_2']:.3f}  distinct-3 {q['distinct_3']:.3f}  "
              f"repeated 4-grams {q['repeat_4gram_rate']:.3f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.config import ServerConfig
    from .server.run import serve

    settings = {f.name: getattr(args, f.name) for f in fields(ServerConfig) if getattr(args, f.name) is not None}
    serve(args.models, ServerConfig(**settings), bundled=not args.no_bundled, device=args.device,
          log_level=args.log_level, dtype=args.dtype)
    return 0


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
    args = build_parser().parse_args(argv)
    if args.command == "train" and args.task in ("classify", "tag", "seq2seq"):
        args.command = f"train-{args.task}"
    handler = {"train": cmd_train_lm, "train-classify": cmd_train_classify, "classify": cmd_classify,
               "train-tag": cmd_train_tag, "tag": cmd_tag, "train-seq2seq": cmd_train_seq2seq,
               "translate": cmd_translate,
               "generate": cmd_generate, "eval": cmd_eval, "serve": cmd_serve, "inspect": cmd_inspect,
               "export": cmd_export, "datasets": cmd_datasets}
    try:
        return handler[args.command](args)
    except LstmgenError as e:
        print(f"lstmgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmgen: interrupted", file=sys.stderr)
        return 130
