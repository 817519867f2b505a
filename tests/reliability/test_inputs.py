"""Inputs: whitespace-only, binary and huge single-line corpora, unseen characters, random options."""
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstmgen
from lstmgen.cli import main
from lstmgen.errors import LstmgenError

PEAK_RSS = """
import resource, sys
from lstmgen.data import open_corpus, token_cache
from lstmgen.tokenizers import Tokenizer
c = open_corpus(sys.argv[1])
tok = Tokenizer.train("char", c.chunks("train"))
n = len(token_cache(c, "train", tok, folder=sys.argv[2]))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_mib(path, cache):
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path), str(cache)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    tokens, mib = map(int, r.stdout.split())
    return tokens, mib


def test_200_mb_single_line_file_tokenizes_in_bounded_memory(tmp_path):
    big = tmp_path / "one-line.txt"
    block = ("to be or not to be that is the question " * 1000).encode()
    with open(big, "wb") as fh:
        for _ in range(200 * 2**20 // len(block)):
            fh.write(block)
    small = tmp_path / "small.txt"
    small.write_bytes(block)
    _, base = peak_mib(small, tmp_path / "c1")
    tokens, peak = peak_mib(big, tmp_path / "c2")
    assert tokens > 180_000_000
    assert peak - base < 250, f"peak {peak} MiB against {base} MiB for a small file"  # the text alone is 200 MiB


@pytest.mark.parametrize("content, message", [
    (b"   \n\t\n  \r\n", "only whitespace"),
    (b"", "is empty"),
    (bytes(range(256)) * 4, "not UTF-8"),
])
def test_unusable_corpora_are_one_clear_error(tmp_path, content, message, capsys):
    p = tmp_path / "corpus.txt"
    p.write_bytes(content)
    assert main(["train", "lm", "--data", str(p), "--out", str(tmp_path / "o"), "--max-steps", "1"]) == 2
    assert message in capsys.readouterr().err


def test_mixed_newlines_chinese_and_emoji_train_and_generate(tmp_path):
    p = tmp_path / "mixed.txt"
    p.write_bytes(("第一行\r\nline two 🎉\rline three\n" * 200).encode())
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    train_lm(LMRecipe(data=str(p), out=str(tmp_path / "m"), hidden_size=16, num_layers=1,
                      train=TrainConfig(batch_size=4, bptt=16, max_steps=5, eval_every=5)), command="pytest")
    gen = lstmgen.load(tmp_path / "m")
    assert gen.tokenizer.decode(gen.tokenizer.encode("第一行\r\n🎉")) == "第一行\r\n🎉"
    # Policy: characters the model never saw become <unk> in the prompt; <unk> is never generated.
    out = gen.generate("Ωmega 🚀", max_new_tokens=30, seed=0)
    assert out.startswith("Ωmega 🚀") and "\ufffd" not in out.completion


options = st.fixed_dictionaries({}, optional={
    "max_new_tokens": st.integers(-2, 12), "temperature": st.one_of(st.floats(-1, 3), st.just(float("nan"))),
    "top_k": st.integers(-2, 80), "top_p": st.floats(-0.5, 1.5), "min_p": st.floats(-0.5, 1.5),
    "typical_p": st.floats(-0.5, 1.5), "repetition_penalty": st.floats(-1, 3),
    "presence_penalty": st.floats(-3, 3), "frequency_penalty": st.floats(-3, 3),
    "no_repeat_ngram_size": st.integers(-1, 5), "num_beams": st.integers(-1, 3),
    "num_return_sequences": st.integers(-1, 3), "stop": st.lists(st.text(max_size=3), max_size=2),
    "bad_words": st.lists(st.text(max_size=3), max_size=2), "seed": st.integers(0, 2**31),
    "min_new_tokens": st.integers(-1, 5), "length_penalty": st.floats(-2, 2),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=20), opts=options)
def test_any_options_give_a_clear_error_or_a_valid_result(tiny_model_dir, prompt, opts):
    gen = _cached_load(tiny_model_dir)
    try:
        out = gen.generate(prompt, **opts)
    except LstmgenError:
        return
    for r in out if isinstance(out, list) else [out]:
        assert r.startswith(prompt) and r.finish_reason in ("stop", "eos", "length")
        assert len(r.token_ids) <= max(opts.get("max_new_tokens", 200), 0)


_LOADED = {}


def _cached_load(d):
    if d not in _LOADED:
        _LOADED[d] = lstmgen.load(d)
    return _LOADED[d]
