"""The model card: README.md of a model folder, written from its config.json."""
from __future__ import annotations

from pathlib import Path


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(config: dict, folder: Path) -> str:
    """Markdown describing the model: what it is, its data, size, metrics and the command that made it."""
    m, name = config.get("model", {}), Path(folder).name
    lines = [f"# {name}", "",
             f"An LSTM language model made with lstmgen {config.get('lstmgen_version', '')}: "
             f"{config.get('tokenizer', '?')}-level tokens, {m.get('num_layers')} x {m.get('hidden_size')} LSTM, "
             f"embedding {m.get('embed_size') or m.get('hidden_size')}, vocabulary {m.get('vocab_size')}"
             + (f", {config['num_parameters']:,} parameters" if "num_parameters" in config else "") + ".", "",
             "```python", "import lstmgen",
             f'gen = lstmgen.load("{name}")  # this folder\'s path, or its name for a bundled model',
             'print(gen.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1))', "```", ""]
    data = config.get("data")
    if data:
        lines += ["## Data", "", f"- source: `{data.get('name')}`", f"- splits: {data.get('split_note', '')}",
                  f"- training tokens: {data.get('train_tokens', '?'):,}" if isinstance(data.get("train_tokens"), int)
                  else "", ""]
    metrics = config.get("metrics")
    if metrics:
        lines += ["## Metrics", "", "| split | figure | value |", "| --- | --- | --- |"]
        for split, vals in metrics.items():
            for k, v in vals.items():
                lines.append(f"| {split} | {k} | {_fmt(v)} |")
        lines += ["", "`loss` is nats per token with the LSTM state carried over the whole split; "
                  "`window256_loss` scores non-overlapping 256-token windows, each from a zero state.", ""]
    training = config.get("training")
    if training:
        s = training.get("summary", {})
        lines += ["## Training", "", f"- steps: {s.get('steps')}, epochs: {s.get('epochs')}, "
                  f"minutes: {s.get('minutes')} on {training.get('device', '?')}", ""]
        if training.get("command"):
            lines += ["Made with:", "", "```", training["command"], "```", ""]
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in training.get("config", {}).items()), ""]
    if (Path(folder) / "loss.png").exists():
        lines += ["![loss curve](loss.png)", ""]
    return "\n".join(line for line in lines if line is not None)
