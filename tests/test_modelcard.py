"""Model cards: the Hugging Face front matter parses with huggingface_hub's own reader; the body has the
sections a user looks for."""
import json

from huggingface_hub import ModelCard

import lstmgen
from lstmgen.folder import resolve_model_dir


def card_of(folder):
    return ModelCard.load(str(folder / "README.md"))


def test_trained_folder_card(tiny_model_dir):
    card = card_of(tiny_model_dir)
    d = card.data
    assert d.library_name == "lstmgen" and d.pipeline_tag == "text-generation"
    assert {"lstm", "char-level", "text-generation"} <= set(d.tags)
    for section in ("## Use", "## Data", "## Hyper-parameters", "## Evaluation", "## Training", "## Limitations"):
        assert section in card.text, section
    assert "Made with:" in card.text  # the command that made it


def test_bundled_card_carries_its_results():
    folder = resolve_model_dir("shakespeare-char")
    d = card_of(folder).data
    config = json.loads((folder / "config.json").read_text())
    assert d.datasets == ["tinyshakespeare"] and d.language == ["en"]
    results = {r.metric_type: r.metric_value for r in d.eval_results}
    assert abs(results["loss"] - config["metrics"]["valid"]["loss"]) < 1e-4
    assert abs(results["window256_loss"] - config["metrics"]["valid"]["window256_loss"]) < 1e-4


def test_save_pretrained_writes_the_card(tmp_path):
    out = lstmgen.load("shakespeare-char").save_pretrained(tmp_path / "copy")
    assert card_of(out).data.library_name == "lstmgen"
