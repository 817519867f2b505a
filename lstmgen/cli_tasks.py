"""The task commands of `lstmgen`: train classify / classify, train tag / tag, inspect, export onnx.

cli.py builds the parser and dispatches; these are the handlers (and their flag tables) for the commands
beyond the language model's train / generate / eval / serve / datasets.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_io import input_lines, output_file, read_text
from .cli_lm import load_lm
from .cli_settings import exit_code, task_settings
from .errors import UserInputError

# flag -> (type, help), as in cli.py: the recipes' own settings, and training settings with this task's default
# or meaning; the other training flags are cli_settings.TRAIN_FLAGS.
CLASSIFY_FLAGS = {
    "vocab-size": (int, "words in the vocabulary"),
    "max-length": (int, "tokens read per text"),
    "truncate": (str, "pre (keep the end) | post (keep the start)"),
    "normalize": (str, "keras | lower | none"),
    "embed-size": (int, "embedding size"),
    "hidden-size": (int, "LSTM units per direction"),
    "num-layers": (int, "LSTM layers"),
    "bidirectional": (lambda v: v.lower() in ("1", "true", "yes"), "true | false"),
    "pooling": (str, "last | max | mean | attention"),
    "dropout": (float, "dropout"),
    "weight-drop": (float, "DropConnect on the LSTM's hidden-to-hidden weights while training (AWD-LSTM, "
                           "ULMFiT)"),
    "init-from": (str, "a language-model folder: its tokenizer, embedding and LSTM start the classifier "
                       "(ULMFiT; use --preset ulmfit)"),
    "discriminative-lr": (float, "each layer group below the head trains at lr / this (ULMFiT 2.6)"),
    "gradual-unfreezing": (lambda v: v.lower() in ("1", "true", "yes"), "true: the head alone first, one more "
                                                                         "layer group per epoch"),
}
TAG_FLAGS = {
    "word-dim": (int, "word embedding size (default 100)"),
    "char-dim": (int, "character embedding size (default 25)"),
    "char-hidden": (int, "character BiLSTM units per direction (0: none; default 25)"),
    "hidden-size": (int, "sentence BiLSTM units per direction (default 200)"),
    "num-layers": (int, "sentence BiLSTM layers (default 1)"),
    "dropout": (float, "dropout (default 0.5)"),
    "batch-size": (int, "sentences per batch (default 16)"),
    "lr": (float, "learning rate (default 2e-3)"),
    "max-epochs": (float, "epochs (default 40)"),
}


def cmd_train_classify(args: argparse.Namespace) -> int:
    from .classification import ClassifierRecipe, train_classifier

    given, train = task_settings(args, CLASSIFY_FLAGS, ClassifierRecipe, "classify", ("data", "out", "preset"))
    preset = given.pop("preset", None)
    if not given.get("data"):
        raise UserInputError("--data is required (or set data in --config)")
    given.setdefault("out", f"runs/{preset or Path(given['data'].split(':')[0]).stem}")
    recipe = ClassifierRecipe.from_preset(preset, train=train, **given)
    if args.folds:
        from .classification import cross_validate

        result = cross_validate(recipe, args.folds, resume=args.resume)
        print(f"{args.folds}-fold cross-validation: accuracy {result['mean_accuracy']:.4f} "
              f"(folds {', '.join(f'{a:.4f}' for a in result['accuracies'])})")
        return 0
    result = train_classifier(recipe, resume=args.resume)
    for split, m in result["metrics"].items():
        print(f"{split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} ({m['examples']} texts)")
    print(f"model folder: {result['out']} (confusion matrix: {result['out']}/confusion.png)")
    return exit_code(result)


def cmd_train_tag(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .tagging import TagRecipe, train_tagger

    given, train = task_settings(args, TAG_FLAGS, TagRecipe, "tag", ("data", "out", "scheme"))
    if not given.get("data"):
        raise UserInputError("--data is required (or set data in --config)")
    recipe = TagRecipe(**{"out": "runs/tagger", **given})
    recipe.train = replace(recipe.train, **train)
    result = train_tagger(recipe, resume=args.resume)
    for split, m in result["metrics"].items():
        print(f"{split}: entity F1 {100 * m['f1']:.2f} (precision {100 * m['precision']:.2f}, recall "
              f"{100 * m['recall']:.2f}; {m['sentences']} sentences)")
    print(f"model folder: {result['out']}")
    return exit_code(result)


def cmd_tag(args: argparse.Namespace) -> int:
    from .pipelines import load
    from .tagging import Tagger

    texts = input_lines(args.texts, args.input)
    tagger = load(args.model)
    if not isinstance(tagger, Tagger):
        raise UserInputError(f"{args.model} is not a tagger folder (it is a {tagger.task} model)")
    for text, r in zip(texts, tagger.tag(texts)):
        if args.json:
            print(json.dumps({"text": text, "entities": r["entities"]}, ensure_ascii=False))
        else:
            ents = "; ".join(f"{e['text']} [{e['label']} {e['start']}:{e['end']}]" for e in r["entities"])
            print(f"{text}\t{ents or '(no entities)'}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from .classification import TextClassifier
    from .pipelines import load

    texts = input_lines(args.texts, args.input)
    clf = load(args.model)
    if not isinstance(clf, TextClassifier):
        raise UserInputError(f"{args.model} is not a classifier folder (it is a {clf.task} model)")
    for text, r in zip(texts, clf.predict(texts)):
        if args.json:
            print(json.dumps({"text": text, **r}, ensure_ascii=False))
        else:
            probs = ", ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items())
            print(f"{r['label']}\t({probs})\t{text}")
    return 0


def eval_task(args: argparse.Namespace, pipe) -> int:
    """`lstmgen eval DIR --data ...` for a classifier or tagger folder: its figures on a split, as JSON with
    --json, else a line."""
    from .classification import TextClassifier, evaluate_classifier
    from .tagging import evaluate_tagger

    if not args.data:
        raise UserInputError("give --data: the labelled texts to score the model on")
    if isinstance(pipe, TextClassifier):
        r = evaluate_classifier(pipe, args.data, args.split)
        line = (f"accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, loss {r['loss']:.4f} "
                f"({r['examples']} texts)")
    else:
        r = evaluate_tagger(pipe, args.data, args.split)
        line = (f"entity F1 {100 * r['f1']:.2f} (precision {100 * r['precision']:.2f}, recall "
                f"{100 * r['recall']:.2f}; {r['sentences']} sentences)")
    if args.json:
        print(json.dumps({"model": args.model, **r}, ensure_ascii=False))
    else:
        print(f"{args.model} on {args.data} [{args.split}]: {line}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .visualize import find_cells, parse_cells, trace, write_png, write_report

    if args.top < 0:
        raise UserInputError(f"--top must be >= 0, got {args.top}")
    text = args.text if args.text is not None else read_text(args.text_file, "--text-file")
    out, png = output_file(args.out, "--out"), output_file(args.png, "--png") if args.png else None
    try:
        cells = parse_cells(args.cells)
        tr = trace(load_lm(args.model, "inspect"), text)
        out = write_report(tr, out, title=f"lstmgen inspect: {args.model}", cells=cells, top=args.top)
        png = write_png(tr, png, cells=cells, top=min(args.top, 4)) if png else None
    except ValueError as e:
        raise UserInputError(str(e)) from None
    for d in find_cells(tr)[:args.top]:
        print(f"layer {d['layer']} cell {d['unit']:4d}  r = {d['r']:+.3f}  {d['feature']}")
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    out = output_file(args.out, "out")
    path = export_onnx(load_lm(args.model, "export onnx"), out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
