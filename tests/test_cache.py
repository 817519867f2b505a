"""The continuous cache (training/cache.py) against a step-by-step transcription of its definition."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmgen.cli import main
from lstmgen.errors import UserInputError
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.training import stateful_loss
from lstmgen.training.cache import CacheConfig, cache_probs, mixed_nll, stream_outputs, tune


def reference_nll(h, targets, logp_full, window, theta, lam):
    """AWD-LSTM's pointer.py loop, one position at a time with a whole-vocabulary distribution (but the
    cache used from the second position on): p = lam * p_ptr + (1 - lam) * p_vocab."""
    total = 0.0
    for t in range(len(targets)):
        p = logp_full[t].exp()
        if t > 0:
            lo = max(0, t - window)
            attn = torch.softmax(theta * (h[lo:t] @ h[t]), 0)
            ptr = torch.zeros_like(p).index_add_(0, targets[lo:t], attn)
            p = lam * ptr + (1 - lam) * p
        total -= math.log(p[targets[t]])
    return total / len(targets)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), vocab=st.integers(2, 9), dim=st.integers(1, 6), window=st.integers(1, 50),
       theta=st.sampled_from([0.0, 0.3, 1.0, 4.0]), lam=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
       chunk=st.integers(1, 16), seed=st.integers(0, 10**6))
def test_matches_the_step_by_step_definition(n, vocab, dim, window, theta, lam, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,), generator=g)
    logp_full = torch.log_softmax(torch.randn(n, vocab, generator=g, dtype=torch.float64), -1)
    logp = logp_full.gather(-1, targets[:, None]).squeeze(-1)
    ours = mixed_nll(logp, cache_probs(h, targets, window, theta, chunk=chunk), lam)
    assert ours == pytest.approx(reference_nll(h, targets, logp_full, window, theta, lam), rel=1e-9, abs=1e-9)


def test_stream_outputs_score_as_one_carried_stream():
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=20, hidden_size=12, num_layers=2, dropout=0.0))
    ids = np.random.default_rng(0).integers(0, 20, 300).astype(np.uint16)
    h, targets, logp = stream_outputs(model, ids, bptt=37)
    total, count = stateful_loss(model, ids, batch_size=1)
    assert h.shape == (299, 12) and targets.tolist() == ids[1:].tolist() and count == 299
    assert float(-logp.double().sum()) == pytest.approx(total, rel=1e-5)


def test_the_cache_finds_a_repeated_passage():
    """A passage read a second time: the same contexts give the same hidden states (here: random ones of
    equal length, so a state's own copy has the largest dot product), and the cache points at the word that
    followed them before, which a model that knows nothing (uniform over 50 words) cannot."""
    g = torch.Generator().manual_seed(0)
    h = torch.nn.functional.normalize(torch.randn(60, 16, generator=g), dim=1).repeat(4, 1)
    targets = torch.randint(0, 50, (60,), generator=g).repeat(4)
    logp = torch.full((240,), -math.log(50))
    cfg, loss = tune(h, targets, logp, window=200, thetas=(1.0, 10.0, 100.0))
    assert cfg.theta == 100.0 and cfg.lam >= 0.25 and loss < 0.5 * math.log(50), (cfg, loss)
    # with no cache weight the figure is the model's own
    assert mixed_nll(logp, cache_probs(h, targets, 200, 1.0), 0.0) == pytest.approx(math.log(50))


def test_settings_are_checked():
    for bad in ({"window": 0}, {"window": 2.5}, {"theta": -1.0}, {"lam": 1.5}):
        with pytest.raises(UserInputError):
            CacheConfig(**bad)


def test_eval_cli_reports_the_cache(tiny_model_dir, corpus_file, capsys):
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--cache-tune", "--cache-window", "100",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["cache"]
    assert c["window"] == 100 and c["tuned_on"] == "valid" and c["perplexity_without"] == pytest.approx(r["perplexity"])
    assert c["perplexity"] <= r["perplexity"] + 1e-9  # tuned on this very split: never worse than no cache
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--cache-theta", "0.5",
                 "--cache-lambda", "0.2"]) == 0
    assert "continuous cache (window 500, theta 0.5, lambda 0.2)" in capsys.readouterr().out
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--cache-tune", "--cache-theta", "1"]) == 2
    assert main(["eval", str(tiny_model_dir), "--samples", "1", "--cache"]) == 2
    assert "give --data" in capsys.readouterr().err
