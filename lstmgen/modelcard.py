"""The model card: README.md of a model folder, written from its config.json.

It opens with the Hugging Face model-card front matter (YAML between `---` lines: license, language,
library_name, tags, datasets, metrics, pipeline_tag, model-index with the evaluation results), so a
folder pushed to the Hub is described there; the body says what the model is, its data, hyper-parameters,
results, the command that made it, how to use it and what it cannot do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

# What each registry data set is written in; a folder trained on other data leaves the language out.
DATA_LANGUAGE = {"tinyshakespeare": "en", "ptb": "en", "wikitext-2": "en", "imdb": "en", "rt-polarity": "en",
                 "conll2003": "en", "gigaword": "en", "squad": "en"}
PIPELINE_TAG = {"lstm-lm": "text-generation", "lstm-classifier": "text-classification",
                "lstm-tagger": "token-classification", "lstm-seq2seq": "translation"}
# The figures the model-index lists, by model type: (key in config metrics, its name).
INDEX_METRICS = {
    "lstm-lm": (("loss", "loss (nats/token, carried state)"), ("perplexity", "perplexity"),
                ("bpc", "bits per character"), ("window256_loss", "loss (256-token windows)")),
    "lstm-classifier": (("accuracy", "accuracy"), ("macro_f1", "macro-F1")),
    "lstm-tagger": (("f1", "entity F1 (conlleval)"), ("precision", "entity precision"),
                    ("recall", "entity recall")),
    "lstm-seq2seq": (("bleu", "sacreBLEU"), ("chrf", "chrF"), ("rouge2", "ROUGE-2"), ("exact_match", "exact match")),
}
USAGE = {
    "lstm-lm": ('print(gen.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1))',
                'lstmgen generate {name} --prompt "ROMEO:"'),
    "lstm-classifier": ('print(gen.predict(["A wonderful film.", "Two hours I will not get back."]))',
                        'lstmgen classify {name} "A wonderful film."'),
    "lstm-tagger": ('print(gen.tag("Angela Merkel visited Paris."))',
                    'lstmgen tag {name} "Angela Merkel visited Paris."'),
    "lstm-seq2seq": ('print(gen.translate(["Ein Mann fährt Fahrrad."], num_beams=5))',
                     'lstmgen translate {name} "Ein Mann fährt Fahrrad."'),
}


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _yaml(value) -> str:
    """A scalar as YAML: JSON's quoting is valid YAML."""
    return json.dumps(value, ensure_ascii=False)


def front_matter(config: dict, name: str) -> List[str]:
    """The Hugging Face model-card metadata block."""
    data = (config.get("data") or {}).get("name")
    tags = ["lstm", "pytorch", f"{config.get('tokenizer', 'char')}-level"]
    kind = config.get("model_type", "lstm-lm")
    task = PIPELINE_TAG.get(kind, "text-generation")
    lines = ["---", f"license: {_yaml(config.get('license', 'unknown'))}"]
    if data in DATA_LANGUAGE:
        lines += ["language:", f"  - {DATA_LANGUAGE[data]}"]
    lines += ["library_name: lstmgen", "tags:"] + [f"  - {t}" for t in tags + [task]]
    if data:
        lines += ["datasets:", f"  - {_yaml(data)}"]
    metrics = config.get("metrics") or {}
    split = "test" if "test" in metrics else "valid"
    valid = metrics.get(split) or {}
    named = [(k, label) for k, label in INDEX_METRICS.get(kind, ()) if k in valid]
    if named:
        lines += ["metrics:"] + [f"  - {k}" for k, _ in named[:2]]
    lines.append(f"pipeline_tag: {task}")
    if named and data:
        lines += ["model-index:", f"  - name: {_yaml(name)}", "    results:", "      - task:",
                  f"          type: {task}", "        dataset:", f"          name: {_yaml(data)}",
                  f"          type: {_yaml(data)}", f"          split: {split}", "        metrics:"]
        for key, label in named:
            lines += [f"          - type: {key}", f"            value: {round(valid[key], 4)}",
                      f"            name: {_yaml(label)}"]
    return lines + ["---", ""]


def model_card(config: dict, folder: Path) -> str:
    """Markdown describing the model: what it is, its data, size, metrics and the command that made it."""
    m, name = config.get("model", {}), Path(folder).name
    kind = config.get("model_type", "lstm-lm")
    what = {"lstm-lm": "an LSTM language model",
            "lstm-classifier": f"an LSTM text classifier ({', '.join(config.get('labels', []))})",
            "lstm-tagger": "a BiLSTM-CRF tagger with character features (Lample et al. 2016)",
            "lstm-seq2seq": f"an LSTM encoder-decoder with {m.get('attention')} attention"
                            f"{' and copying' if m.get('copy') else ''} ({config.get('text_task', 'translation')})",
            }.get(kind, kind)
    python, shell = USAGE.get(kind, USAGE["lstm-lm"])
    lines = front_matter(config, name) + [
        f"# {name}", "",
        f"{what[0].upper() + what[1:]} made with lstmgen {config.get('lstmgen_version', '')}: "
        f"{config.get('tokenizer', '?')}-level tokens, {m.get('num_layers') or m.get('encoder_layers')} x "
        f"{m.get('hidden_size')}{' (the last ' + str(m['last_layer_size']) + ')' if m.get('last_layer_size') else ''} "
        f"{'BiLSTM' if m.get('bidirectional') or kind == 'lstm-tagger' else 'LSTM'}, "
        f"embedding {m.get('embed_size') or m.get('word_dim') or m.get('hidden_size')}, "
        f"vocabulary {m.get('vocab_size') or m.get('word_vocab') or m.get('tgt_vocab_size')}"
        + (f", {config['num_parameters']:,} parameters" if "num_parameters" in config else "") + ".", "",
        "## Use", "",
        "```python", "import lstmgen",
        f'gen = lstmgen.load("{name}")  # this folder\'s path, or its name for a bundled model',
        python, "```", "",
        f"or `{shell.format(name=name)}`, or `lstmgen serve {name}` for the HTTP API and a playground.", ""]
    data = config.get("data")
    if data:
        lines += ["## Data", "", f"- source: `{data.get('name')}`", f"- splits: {data.get('split_note', '')}",
                  f"- training tokens: {data.get('train_tokens', '?'):,}" if isinstance(data.get("train_tokens"), int)
                  else "", ""]
    lines += ["## Hyper-parameters", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in m.items()]
    training = config.get("training") or {}
    lines += [f"| {k} | {v} |" for k, v in training.get("config", {}).items() if v is not None]
    lines.append("")
    metrics = config.get("metrics")
    if metrics:
        lines += ["## Evaluation", "", "| split | figure | value |", "| --- | --- | --- |"]
        for split, vals in metrics.items():
            for k, v in vals.items():
                if not isinstance(v, (list, dict)):
                    lines.append(f"| {split} | {k} | {_fmt(v)} |")
        lines += ["", "`loss` is nats per token with the LSTM state carried over the whole split; "
                  "`window256_loss` scores non-overlapping 256-token windows, each from a zero state."
                  if kind == "lstm-lm" else "Accuracy and macro-F1 (the unweighted mean of the classes' F1)."
                  if kind == "lstm-classifier" else "sacreBLEU and chrF (signatures in config.json), ROUGE F1 "
                  "(rouge-score, stemmed), SQuAD exact match / token F1, from beam search." if kind == "lstm-seq2seq"
                  else "Entity-level precision, recall and F1 with conlleval's rules "
                  "(an entity counts only when its label and both ends are right).", ""]
    if training:
        s = training.get("summary", {})
        lines += ["## Training", "", f"- steps: {s.get('steps')}, epochs: {s.get('epochs')}, "
                  f"minutes: {s.get('minutes')} on {training.get('device', '?')}", ""]
        if training.get("command"):
            lines += ["Made with:", "", "```", training["command"], "```", ""]
    if (Path(folder) / "loss.png").exists():
        lines += ["![loss curve](loss.png)", ""]
    if (Path(folder) / "confusion.png").exists():
        lines += ["![confusion matrix](confusion.png)", ""]
    if kind == "lstm-tagger":
        lines += ["## Limitations", "",
                  "- It finds the entity types of its training data, in text like its training data (news for "
                  "CoNLL-2003); other genres lose much of the accuracy.",
                  "- Without pretrained word vectors, rare names are recognised mostly from their spelling.", ""]
        return "\n".join(line for line in lines if line is not None)
    if kind == "lstm-seq2seq":
        lines += ["## Limitations", "",
                  "- It knows the vocabulary and style of its training pairs (image captions for Multi30k); "
                  "other domains get fluent output that is often wrong.",
                  f"- It reads at most {config.get('max_source_tokens', '?')} source tokens; longer sources are "
                  "cut (with a warning).", ""]
        return "\n".join(line for line in lines if line is not None)
    if kind == "lstm-classifier":
        lines += ["## Limitations", "",
                  "- It knows the labels and the kind of text it was trained on; other domains (tweets for a "
                  "movie-review model) get confident answers that are often wrong.",
                  f"- It reads at most {(config.get('prep') or {}).get('max_length', '?')} words of a text "
                  f"({'the last ones' if (config.get('prep') or {}).get('truncate') == 'pre' else 'the first'}).",
                  "- Words outside its vocabulary are all the same `<unk>` to it; sarcasm and negation far "
                  "from their object are its classic errors.", ""]
        return "\n".join(line for line in lines if line is not None)
    lines += ["## Limitations", "",
              "- It imitates the style and vocabulary of its training text and knows nothing else: what it "
              "writes is not true, and it repeats what the data contains, biases and offensive text included.",
              "- Its memory is the LSTM state: it keeps the gist of the last few hundred tokens, not a whole "
              "document, and it never saw text longer than its training windows in one piece.",
              "- " + ("A character it never saw becomes `<unk>` in a prompt, and it never writes one."
                      if config.get("tokenizer") in ("char", "word") else
                      "Byte-level BPE reads any text, but text unlike the training data gets little sense back."),
              ""]
    return "\n".join(line for line in lines if line is not None)
