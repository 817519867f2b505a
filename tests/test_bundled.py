"""The shakespeare-char model that ships inside the package."""
import json
import math

import pytest

import lstmgen
from lstmgen.errors import UserInputError
from lstmgen.folder import PRETRAINED_DIR, bundled_models
from lstmgen.recipes import evaluate_folder


def test_bundled_model_is_listed_small_and_documented():
    assert "shakespeare-char" in bundled_models()
    folder = PRETRAINED_DIR / "shakespeare-char"
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 10 * 2**20
    card = (folder / "README.md").read_text()
    assert "lstmgen train lm --data tinyshakespeare --tokenizer char --max-minutes 30" in card
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["metrics"]["valid"]["window256_loss"] <= 1.45


def test_bundled_model_generates_deterministically():
    gen = lstmgen.load("shakespeare-char")
    a = gen.generate("ROMEO:", max_new_tokens=200, seed=1)
    assert a == lstmgen.load("shakespeare-char").generate("ROMEO:", max_new_tokens=200, seed=1)
    words = a.split()
    # Shakespeare-like: mostly real words, speaker lines, punctuation
    assert len(words) > 25 and sum(w.strip(".,;:!?'").isalpha() for w in words) / len(words) > 0.8
    assert "\n" in a


def test_bundled_model_scores_on_tinyshakespeare(data_dir):
    """The shipped (float16) weights on the last 10% of tinyshakespeare, both figures."""
    # 16 streams: the carried-state figure within 0.0011 nats of one stream's (1.4033 vs 1.4022), 3x faster
    r = evaluate_folder("shakespeare-char", "tinyshakespeare", "valid", batch_size=16)
    assert r["window256_loss"] <= 1.45 and r["loss"] < r["window256_loss"]
    assert r["bpc"] == pytest.approx(r["loss"] / math.log(2))
    for bad in ({"batch_size": 0}, {"window": 0}):  # named, not clamped to 1 or failing deep inside
        with pytest.raises(UserInputError, match=next(iter(bad))):
            evaluate_folder("shakespeare-char", "tinyshakespeare", "valid", **bad)
