"""Model folders and generation: save/load, no pickle, clear errors, determinism, incremental decoding."""
import json
import shutil

import pytest
import torch

import lstmgen
from lstmgen.errors import ModelFolderError, UserInputError
from lstmgen.pipelines import TextGenerator


def test_folder_has_every_file(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
            "training_log.jsonl", "loss.png"} <= names
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "lstm-lm" and cfg["lstmgen_version"] == lstmgen.__version__
    assert {"loss", "perplexity", "bpc", "window256_loss"} <= set(cfg["metrics"]["valid"])
    card = (tiny_model_dir / "README.md").read_text()
    assert "pytest fixture" in card and "window256_loss" in card and "parameters" in card


def test_round_trip_gives_identical_logits(tiny_model_dir, tmp_path):
    gen = lstmgen.load(tiny_model_dir)
    gen.save_pretrained(tmp_path / "copy")
    again = TextGenerator.from_pretrained(tmp_path / "copy")
    x = torch.tensor([gen.tokenizer.encode("KING:\nThe")])
    assert torch.equal(gen.model(x)[0], again.model(x)[0])
    half = gen.save_pretrained(tmp_path / "half", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "copy" / "model.safetensors").stat().st_size
    loaded = TextGenerator.from_pretrained(half)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert torch.allclose(gen.model(x)[0], loaded.model(x)[0], atol=2e-2)


def test_same_seed_same_text_and_seeds_differ(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    a = gen.generate("KING:", max_new_tokens=80, temperature=1.0, seed=7)
    b = lstmgen.load(tiny_model_dir).generate("KING:", max_new_tokens=80, temperature=1.0, seed=7)
    c = gen.generate("KING:", max_new_tokens=80, temperature=1.0, seed=8)
    assert a == b and a != c and a.startswith("KING:") and len(a) == len("KING:") + 80


def test_stream_pieces_join_to_generate(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    pieces = list(gen.stream("The", max_new_tokens=40, seed=3))
    assert len(pieces) == 40 and "The" + "".join(pieces) == gen.generate("The", max_new_tokens=40, seed=3)


def test_greedy_equals_argmax_and_top_k_1(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    ids = gen.tokenizer.encode("QUEEN:")
    with torch.no_grad():
        for _ in range(30):
            logits, _ = gen.model(torch.tensor([ids]))  # the slow way: the whole text every step
            ids.append(int(logits[0, -1].argmax()))
    greedy = gen.generate("QUEEN:", max_new_tokens=30, temperature=0)
    assert greedy == gen.tokenizer.decode(ids)
    assert gen.generate("QUEEN:", max_new_tokens=30, temperature=0.7, top_k=1, seed=5) == greedy
    assert gen.generate("QUEEN:", max_new_tokens=30, top_p=1e-6, seed=9) == greedy


def test_prompt_runs_once_then_one_step_per_token(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    lengths = []
    hook = gen.model.lstm.register_forward_hook(lambda m, inp, out: lengths.append(inp[0].shape[1]))
    gen.generate("The king and", max_new_tokens=10, seed=0)
    hook.remove()
    assert lengths == [len("The king and")] + [1] * 9


def test_empty_prompt_and_bad_options(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    assert len(gen.generate("", max_new_tokens=20, seed=1)) == 20
    with pytest.raises(UserInputError, match="temperature must be >= 0"):
        gen.generate("x", temperature=-1)
    with pytest.raises(UserInputError, match="top_p must be > 0"):
        gen.generate("x", top_p=0)
    with pytest.raises(UserInputError, match="unknown generation option"):
        gen.generate("x", top_q=0.5)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "missing config.json"),
    (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer.json"),
    (lambda d: (d / "config.json").write_text("{oops"), "malformed JSON"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 40), "not a readable safetensors file"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "model": {"vocab_size": 999}})), "different models"),
    (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "gpt2"})), "not an lstmgen model"),
])
def test_damaged_folders_give_one_clear_error(tiny_model_dir, tmp_path, damage, message):
    d = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, d)
    damage(d)
    with pytest.raises(ModelFolderError, match=message):
        lstmgen.load(d)


def test_unknown_model_name():
    with pytest.raises(ModelFolderError, match="no model folder 'nonexistent-model'"):
        lstmgen.load("nonexistent-model")
