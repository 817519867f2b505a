"""The language-model commands: `lstmgen train lm`, `generate`, `eval`, `serve`, and their flags."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import List

from .cli_io import read_text
from .cli_settings import exit_code
from .errors import UserInputError
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
    "sample-tokens": (int, "print a sample of N tokens at every evaluation (default 100; 0: none)"),
    "chat-template": (str, "a Jinja chat template file for /v1/chat/completions (default: a plain transcript)"),
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
    "dry-multiplier": (float, "DRY: penalize tokens that extend a repeat of the text (0 off; 0.8 is usual)"),
    "dry-base": (float, "DRY: growth of the penalty per token of repeat (default 1.75)"),
    "dry-allowed-length": (int, "DRY: repeats up to this many tokens are free (default 2)"),
    "dry-penalty-last-n": (int, "DRY: tokens to look back (0: all)"),
    "dry-sequence-breakers": ("list", "DRY: strings that end a repeat (default: newline, colon, quote, *)"),
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
    "early-stopping": (str, "beam search ends: true (num-beams hypotheses done, the default), false "
                       "(and no running beam can beat them now), never (nor at max-new-tokens)"),
}


# the decoding options `lstmgen eval --samples` takes too: what changes how repetitive the samples are
SAMPLE_FLAGS = ("temperature", "top-k", "top-p", "min-p", "typical-p", "repetition-penalty", "presence-penalty",
                "frequency-penalty", "no-repeat-ngram-size", "dry-multiplier", "dry-base", "dry-allowed-length",
                "dry-penalty-last-n", "dry-sequence-breakers")


def _settings(args: argparse.Namespace) -> dict:
    """TOML settings overlaid with the flags given, keys with underscores."""
    from .presets import LM, load_settings

    merged: dict = load_settings(args.config, LM) if args.config else {}
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
    if args.resume:
        _check_resume(s)
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
    return exit_code(result)


COMMAND_OF_TASK = {"text-classification": "classify", "token-classification": "tag", "translation": "translate"}


def load_lm(model: str, command: str, **kwargs):
    """lstmgen.load for a command that works on language models: a folder of another kind is a one-line
    error that names the command for it, not an AttributeError later."""
    from .pipelines import TextGenerator, load

    pipe = load(model, **kwargs)
    if not isinstance(pipe, TextGenerator):
        other = COMMAND_OF_TASK.get(pipe.task)
        raise UserInputError(f"{model} is a {pipe.task} model; `lstmgen {command}` works on language models"
                             + (f" (this one runs with `lstmgen {other}`)" if other else ""))
    return pipe


# what a resumed run takes from its folder, not from the flags: the model's shape and regularization
RUN_KEYS = ("embed_size", "hidden_size", "num_layers", "last_layer_size", "tie_weights", "mogrifier_rounds",
            "backend", "dropout", "dropout_input", "dropout_hidden", "dropout_output", "dropout_embedding",
            "weight_drop", "locked_dropout")


def _check_resume(settings: dict) -> None:
    """--resume continues the model in --out as it was made: a setting given now that says otherwise is an
    error naming it, rather than silently ignored. (Training settings, the learning rate or --cpu-amp, may
    change.)"""
    from pathlib import Path

    from .folder import read_json
    from .tokenizers import Tokenizer

    out = Path(settings["out"])
    if not (out / "config.json").is_file():
        return
    saved = dict(read_json(out / "config.json").get("model", {}))
    if (out / "tokenizer.json").is_file():
        saved["tokenizer"] = Tokenizer.load(out / "tokenizer.json").kind
    differ = [f"{k} {saved[k]!r} (given {settings[k]!r})" for k in ("tokenizer",) + RUN_KEYS
              if k in settings and k in saved and settings[k] != saved[k]]
    if differ:
        raise UserInputError(f"--resume continues the run in {out} as it was made, with {'; '.join(differ)}; "
                             "leave those settings out, or start a new run in another --out")


def _read_prompts(args: argparse.Namespace) -> List[str]:
    """--prompt (repeatable), then --prompt-file's lines; else standard input when it is not a terminal."""
    prompts = list(args.prompt or [])
    if args.prompt_file:  # one prompt per non-blank line
        text = read_text(args.prompt_file, "--prompt-file")
        prompts += [line for line in text.splitlines() if line.strip()]
    elif not prompts and not sys.stdin.isatty():
        prompts.append(sys.stdin.read())
    return prompts or [""]


def cmd_generate(args: argparse.Namespace) -> int:
    opts = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in GEN_FLAGS}
    opts["num_return_sequences"] = args.num_return_sequences
    if opts["logit_bias"] is not None:
        try:
            opts["logit_bias"] = json.loads(opts["logit_bias"])
        except json.JSONDecodeError:
            raise UserInputError('--logit-bias must be a JSON object, e.g. \'{"13": -100}\'') from None
    prompts = _read_prompts(args)
    gen = load_lm(args.model, "generate", **({"dtype": args.dtype} if args.dtype else {}))
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


OPTIMISTIC = " (settings chosen on this same text: an optimistic figure)"


def cmd_eval(args: argparse.Namespace) -> int:
    from .folder import read_json, resolve_model_dir
    from .recipes import evaluate_folder, sample_report

    folder = resolve_model_dir(args.model)
    kind = read_json(folder / "config.json").get("model_type") if (folder / "config.json").is_file() else None
    if kind in ("lstm-seq2seq", "lstm-classifier", "lstm-tagger"):
        from .cli_seq2seq import eval_seq2seq
        from .cli_tasks import eval_task
        from .pipelines import load

        if _cache_config(args) or _dynamic_config(args):
            raise UserInputError("the continuous cache and dynamic evaluation score language models; "
                                 f"{args.model} is a {kind.removeprefix('lstm-')} folder")
        if args.samples:
            raise UserInputError(f"--samples measures generated text; {args.model} is a "
                                 f"{kind.removeprefix('lstm-')} folder (give --data to score it)")
        pipe = load(folder, device=None if args.device == "auto" else args.device)
        return eval_seq2seq(args, pipe) if kind == "lstm-seq2seq" else eval_task(args, pipe)
    if not args.data and not args.samples:
        raise UserInputError("give --data to score a corpus, --samples N to measure generated text, or both")
    r: dict = {"model": args.model}
    cache, dynamic = _cache_config(args), _dynamic_config(args)
    if args.data:
        r.update(evaluate_folder(args.model, args.data, args.split, batch_size=args.batch_size, window=args.window,
                                 device=args.device, encoding_errors=args.encoding_errors, cache=cache,
                                 tune_cache=args.cache_tune, dynamic=dynamic, tune_dynamic=args.dynamic_tune))
    if args.samples:
        opts = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in SAMPLE_FLAGS}
        r["sample_quality"] = sample_report(args.model, args.samples, prompt=args.prompt,
                                            max_new_tokens=args.max_new_tokens, seed=args.seed,
                                            **{k: v for k, v in opts.items() if v is not None})
    if args.json:
        print(json.dumps(r))
        return 0
    if args.data:
        w = args.window
        print(f"{args.model} on {args.data} [{args.split}], {r['tokens']:,} tokens")
        print(f"  carried state : loss {r['loss']:.4f}  perplexity {r['perplexity']:.3f}  bits/char {r['bpc']:.4f}")
        print(f"  {w}-token windows from zero state: loss {r[f'window{w}_loss']:.4f}  "
              f"perplexity {r[f'window{w}_perplexity']:.3f}  bits/char {r[f'window{w}_bpc']:.4f}")
        if "dynamic" in r:
            d = r["dynamic"]
            how = f"; tuned on {d['tuned_on']}" if "tuned_on" in d else ""
            note = OPTIMISTIC if d.get("optimistic") else ""
            print(f"  with dynamic evaluation (lr {d['lr']:g}, lambda {d['lambda']:g}, {d['bptt']}-token segments"
                  f"{how}): loss {d['loss']:.4f}  perplexity {d['perplexity']:.3f}{note}")
        if "cache" in r:
            c = r["cache"]
            how = "; tuned on valid" if "tuned_on" in c else ""
            print(f"  with the continuous cache (window {c['window']}, theta {c['theta']}, lambda {c['lambda']}{how}): "
                  f"loss {c['loss']:.4f}  perplexity {c['perplexity']:.3f}{OPTIMISTIC if c.get('optimistic') else ''}")
    if args.samples:
        q = r["sample_quality"]
        print(f"{q['samples']} samples of {args.max_new_tokens} tokens: distinct-1 {q['distinct_1']:.3f}  "
              f"distinct-2 {q['distinct_2']:.3f}  distinct-3 {q['distinct_3']:.3f}  "
              f"repeated 4-grams {q['repeat_4gram_rate']:.3f}")
    return 0


def _cache_config(args: argparse.Namespace):
    """The continuous cache's settings from `eval`'s flags, or None when none of them is given."""
    from .training.cache import CacheConfig

    return _post_config(args, "cache", "the continuous cache", CacheConfig,
                        {"window": "window", "theta": "theta", "lambda": "lam"}, tuned=("theta", "lambda"))


def _dynamic_config(args: argparse.Namespace):
    """Dynamic evaluation's settings from `eval`'s flags, or None when none of them is given."""
    from .training.dynamic import DynamicConfig

    return _post_config(args, "dynamic", "dynamic evaluation", DynamicConfig,
                        {"lr": "lr", "lambda": "lam", "bptt": "bptt", "stat_tokens": "stat_tokens"},
                        tuned=("lr", "lambda"))


def _post_config(args: argparse.Namespace, name: str, what: str, cls, fields: dict, tuned: tuple):
    """A post-processing step's config from the flags --NAME, --NAME-tune and --NAME-FLAG (`fields`: flag ->
    config field), or None when none is given; --NAME-tune chooses the `tuned` ones itself."""
    given = {flag: getattr(args, f"{name}_{flag}") for flag in fields if getattr(args, f"{name}_{flag}") is not None}
    if not (getattr(args, name) or getattr(args, f"{name}_tune") or given):
        return None
    if not args.data:
        raise UserInputError(f"{what} scores a corpus: give --data")
    if getattr(args, f"{name}_tune") and set(tuned) & set(given):
        raise UserInputError(f"--{name}-tune chooses {' and '.join(tuned)} itself; leave out "
                             + ", ".join(f"--{name}-{t}" for t in tuned))
    return cls(**{fields[flag]: v for flag, v in given.items()})


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.config import ServerConfig
    from .server.run import serve

    settings = {f.name: getattr(args, f.name) for f in fields(ServerConfig) if getattr(args, f.name) is not None}
    serve(args.models, ServerConfig(**settings), bundled=not args.no_bundled, device=args.device,
          log_level=args.log_level, dtype=args.dtype)
    return 0
