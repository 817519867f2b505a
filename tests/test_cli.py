"""The command line: train, generate, eval, datasets, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

from lstmgen.cli import main


def cli(*args, env=None):
    """Run `python -m lstmgen` in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "lstmgen", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_every_setting_has_a_flag():
    """A new field of the generation, training or LM settings needs its flag (or a reason to have none)."""
    from dataclasses import fields

    from lstmgen.cli_lm import GEN_FLAGS, LM_FLAGS
    from lstmgen.generation import GenerationConfig
    from lstmgen.recipes import LMRecipe
    from lstmgen.training import TrainConfig

    flags = {k.replace("-", "_") for k in (*GEN_FLAGS, *LM_FLAGS)}
    # given otherwise: --data/--out as arguments of their own, --no-amp, --no-tie-weights;
    # the layer-group schedules belong to the classifier (lstmgen train classify has their flags)
    otherwise = {"data", "out", "train", "amp", "tie_weights", "discriminative_lr",
                 "gradual_unfreezing"}
    settings = {f.name for cls in (GenerationConfig, TrainConfig, LMRecipe) for f in fields(cls)}
    assert settings - otherwise <= flags, sorted(settings - otherwise - flags)


def test_presets_by_name(tmp_path, corpus_file):
    """`--config NAME` finds a preset shipped in the package (an installed lstmgen has no configs/ folder)."""
    from pathlib import Path

    from lstmgen.presets import load_toml, presets

    repo = Path(__file__).parent.parent / "configs"
    assert presets() == sorted(p.stem for p in repo.glob("*.toml")) and "awd-lstm-ptb" in presets()
    for name in presets():
        assert load_toml(name) == load_toml(str(repo / f"{name}.toml"))
    out = tmp_path / "small"  # the preset's settings, shrunk by flags (flags win)
    assert main(["train", "lm", "--config", "ptb-small", "--data", str(corpus_file), "--tokenizer", "char",
                 "--out", str(out), "--max-steps", "3", "--max-epochs", "1", "--eval-every", "3"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 200 and cfg["training"]["config"]["optimizer"] == "sgd"
    r = cli("train", "lm", "--config", "no-such-preset", "--data", corpus_file, "--out", tmp_path / "x")
    assert r.returncode == 2 and "ptb-medium" in r.stderr


def test_train_generate_eval_end_to_end(tmp_path, corpus_file, capsys):
    toml = tmp_path / "small.toml"
    toml.write_text('[model]\nhidden-size = 48\nnum_layers = 1\n[train]\nbatch_size = 8\nbptt = 32\n'
                    'max_steps = 500\n')
    out = tmp_path / "m"
    # flags override the file: max-steps 40 wins over 500
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), "--config", str(toml),
                 "--max-steps", "40", "--eval-every", "20", "--log-every", "10", "--sample-tokens", "30"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 48 and cfg["training"]["summary"]["steps"] == 40
    # a sample at each evaluation, above the progress bar and in the log (the same seed each time)
    assert capsys.readouterr().err.count("--- sample at step") == 2
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    samples = [r["sample"] for r in log if "valid_loss" in r]
    assert len(samples) == 2 and all(0 < len(t) <= 30 * 4 for t in samples)
    assert all("sample" not in r for r in log if "valid_loss" not in r)
    assert main(["eval", str(out), "--data", str(corpus_file), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["split"] == "valid" and r["loss"] > 0 and "window256_bpc" in r
    # a second train into the same folder without --resume is refused; with --resume it continues
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), "--max-steps", "40"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # --resume keeps the run's model: a flag that says otherwise is named, not silently ignored
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), "--config", str(toml),
                 "--hidden-size", "64", "--tokenizer", "word", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "hidden_size 48 (given 64)" in err and "tokenizer 'char' (given 'word')" in err
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), "--config", str(toml),
                 "--max-steps", "60", "--eval-every", "20", "--resume", "--sample-tokens", "0"]) == 0
    assert json.loads((out / "config.json").read_text())["training"]["summary"]["steps"] == 60
    assert "--- sample" not in capsys.readouterr().err


def test_generate_is_deterministic_across_processes(tiny_model_dir):
    a = cli("generate", tiny_model_dir, "--prompt", "KING:", "--seed", "11", "--max-new-tokens", "60")
    b = cli("generate", tiny_model_dir, "--prompt", "KING:", "--seed", "11", "--max-new-tokens", "60",
            "--no-stream")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("KING:")


@pytest.mark.parametrize("args, message", [
    (["train", "lm", "--data", "no/such/file.txt", "--out", "{tmp}/o"], "no data set, file or folder"),
    (["train", "lm", "--data", "shakespear", "--out", "{tmp}/o"], "no data set, file or folder 'shakespear'"),
    (["train", "lm", "--data", "{tmp}/empty.txt", "--out", "{tmp}/o"], "is empty"),
    (["train", "lm", "--data", "{tmp}/latin1.txt", "--out", "{tmp}/o"], "byte offset 3"),
    (["train", "lm", "--data", "{tmp}/ok.txt", "--out", "{tmp}/o", "--dropout", "1.5"], "dropout must be"),
    (["train", "lm", "--data", "{tmp}/ok.txt", "--out", "{tmp}/o", "--lr", "0"], "lr must be > 0"),
    (["train", "lm", "--data", "{tmp}/ok.txt", "--out", "{tmp}/o", "--tokenizer", "sp"], "--tokenizer must be"),
    (["train", "lm", "--data", "{tmp}/ok.txt", "--out", "{tmp}/o", "--batch-size", "5000"], "too few"),
    (["train", "lm", "--data", "{tmp}/ok.txt", "--out", "{tmp}/o", "--device", "cuda:3"], "--device"),
    (["generate", "{tmp}", "--prompt", "x"], "missing config.json"),
    (["generate", "nope-model"], "no model folder"),
    (["datasets", "info", "nope"], "known: tinyshakespeare"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("some text\n" * 50)
    r = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_encoding_errors_replace_goes_on(tmp_path, capsys):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\u00e9 au lait, encore\n".encode("latin-1") * 40)
    assert main(["train", "lm", "--data", str(p), "--out", str(tmp_path / "o"), "--encoding-errors", "replace",
                 "--hidden-size", "16", "--num-layers", "1", "--batch-size", "2", "--bptt", "16",
                 "--max-steps", "3"]) == 0


def test_datasets_list_and_info(capsys, data_dir):
    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ("tinyshakespeare", "ptb", "wikitext-2", "imdb", "conll2003", "squad"):
        assert name in listing
    assert main(["datasets", "info", "tinyshakespeare"]) == 0
    info = capsys.readouterr().out
    assert "first 90%" in info and "test names the same last 10%" in info
    assert "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed" in info
    assert str(data_dir / "tinyshakespeare" / "input.txt") in info


def test_generate_options_json_prompt_file_and_stdin(tiny_model_dir, tmp_path):
    (tmp_path / "prompts.txt").write_text("KING:\n\nQUEEN:\n")
    r = cli("generate", tiny_model_dir, "--prompt-file", tmp_path / "prompts.txt", "--num-samples", "2",
            "--max-new-tokens", "30", "--seed", "3", "--json", "--logprobs", "--repetition-penalty", "1.3",
            "--no-repeat-ngram-size", "4", "--stop", "zzz", "--logit-bias", '{"5": -2}', "--top-logprobs", "3")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["prompt"] for x in recs] == ["KING:", "KING:", "QUEEN:", "QUEEN:"]
    assert all(len(x["logprobs"]) == len(x["token_ids"]) == 30 and x["finish_reason"] == "length" for x in recs)
    r = cli("generate", tiny_model_dir, "--prompt", "KING:", "--max-new-tokens", "10", "--dtype", "bfloat16",
            "--temperature", "0", "--no-stream")
    assert r.returncode == 0 and r.stdout.startswith("KING:"), r.stderr
    for x in recs:  # the 3 most likely tokens at each step, by text; the chosen one is at most as likely
        assert len(x["top_logprobs"]) == 30 and all(len(step) == 3 for step in x["top_logprobs"])
        assert all(lp <= max(step.values()) + 1e-6 for lp, step in zip(x["logprobs"], x["top_logprobs"]))
    piped = subprocess.run([sys.executable, "-m", "lstmgen", "generate", str(tiny_model_dir), "--max-new-tokens",
                            "20", "--temperature", "0", "--no-stream"], input="KING:", capture_output=True,
                           text=True, timeout=300)
    flag = cli("generate", tiny_model_dir, "--prompt", "KING:", "--max-new-tokens", "20", "--temperature", "0")
    assert piped.returncode == 0 and piped.stdout == flag.stdout and piped.stdout.startswith("KING:")
    beams = cli("generate", tiny_model_dir, "--prompt", "KING:", "--num-beams", "3", "--num-samples", "2",
                "--max-new-tokens", "20", "--early-stopping", "never")
    assert beams.returncode == 0 and beams.stdout.count("\n---\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--top-p", "0"], "top_p must be > 0"),
    (["--num-beams", "2", "--num-samples", "3"], "num_return_sequences (3) must be <= num_beams"),
    (["--logit-bias", "{oops"], "--logit-bias must be a JSON object"),
    (["--num-beams", "2", "--early-stopping", "sometimes"], "early_stopping must be true, false or \"never\""),
    (["--prompt-file", "/no/such/prompts.txt"], "--prompt-file"),
])
def test_generate_bad_options_exit_2(tiny_model_dir, args, message):
    r = cli("generate", tiny_model_dir, "--prompt", "x", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_eval_samples_reports_quality(tiny_model_dir, capsys):
    assert main(["eval", str(tiny_model_dir), "--samples", "3", "--max-new-tokens", "80", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["sample_quality"]
    assert q["samples"] == 3 and 0 < q["distinct_1"] <= 1 and 0 <= q["repeat_4gram_rate"] <= 1
    assert main(["eval", str(tiny_model_dir)]) == 2
    assert "--samples" in capsys.readouterr().err
    # the decoding options reach the samples: greedy loops, DRY breaks them
    rates = []
    for extra in ([], ["--dry-multiplier", "0.8", "--dry-allowed-length", "4"]):
        assert main(["eval", str(tiny_model_dir), "--samples", "1", "--max-new-tokens", "300", "--json",
                     "--temperature", "0", *extra]) == 0
        rates.append(json.loads(capsys.readouterr().out)["sample_quality"]["repeat_4gram_rate"])
    assert rates[0] > 0.2 and rates[1] < rates[0] / 2, rates
