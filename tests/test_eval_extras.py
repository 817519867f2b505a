"""The continuous cache (training/cache.py) and dynamic evaluation (training/dynamic.py), each against a
step-by-step transcription of its definition."""
import copy
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
from lstmgen.training.dynamic import DynamicConfig, dynamic_loss, gradient_rms
from lstmgen.training.dynamic import tune as dynamic_tune


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
    assert c["optimistic"]  # chosen on the valid split and scored there
    assert c["perplexity"] <= r["perplexity"] + 1e-9  # tuned on this very split: never worse than no cache
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--cache-theta", "0.5",
                 "--cache-lambda", "0.2"]) == 0
    assert "continuous cache (window 500, theta 0.5, lambda 0.2)" in capsys.readouterr().out
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--cache-tune", "--cache-theta", "1"]) == 2
    assert main(["eval", str(tiny_model_dir), "--samples", "1", "--cache"]) == 2
    assert "give --data" in capsys.readouterr().err


# -- dynamic evaluation (training/dynamic.py) -------------------------------------------------------------
def reference_dynamic(model, ids, train_ids, lr, lam, eps, bptt, stat_batch):
    """Krause et al.'s dynamiceval.py, transcribed plainly: the gradient RMS over the training windows, then
    per segment: score, backward, and for every weight dW = lam * decrate * (W0 - W) - lr * grad / (RMS + eps)."""
    model = copy.deepcopy(model).eval()
    params = list(model.parameters())
    ms, n, state = [torch.zeros_like(p) for p in params], 0, None
    streams = len(train_ids) - 1 if stat_batch > len(train_ids) - 1 else stat_batch
    L = (len(train_ids) - 1) // streams
    x_all = torch.tensor(np.stack([train_ids[b * L:b * L + L] for b in range(streams)]), dtype=torch.long)
    y_all = torch.tensor(np.stack([train_ids[b * L + 1:b * L + L + 1] for b in range(streams)]), dtype=torch.long)
    for s in range(0, L, bptt):
        model.zero_grad()
        logits, state = model(x_all[:, s:s + bptt], state)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), y_all[:, s:s + bptt].flatten()).backward()
        for m, p in zip(ms, params):
            m += p.grad ** 2
        n += 1
        state = tuple(t.detach() for t in state)
    rms = [torch.sqrt(m / n) for m in ms]
    gsum = sum(r.mean() for r in rms) / len(rms)
    decrate = [torch.clamp(r / gsum, max=1 / lam) for r in rms]
    w0 = [p.detach().clone() for p in params]
    total, state = 0.0, None
    ids = torch.tensor(np.asarray(ids, dtype=np.int64))
    for s in range(0, len(ids) - 1, bptt):
        x, y = ids[s:min(s + bptt, len(ids) - 1)], ids[s + 1:min(s + bptt, len(ids) - 1) + 1]
        model.zero_grad()
        logits, state = model(x[None], state)
        loss = torch.nn.functional.cross_entropy(logits[0], y)
        loss.backward()
        with torch.no_grad():
            for p, d, r, w in zip(params, decrate, rms, w0):
                p += lam * d * (w - p) - lr * p.grad / (r + eps)
        total += float(loss.detach()) * len(y)
        state = tuple(t.detach() for t in state)
    return total


def _tiny_lm(seed=0):
    torch.manual_seed(seed)
    return LanguageModel(LMConfig(vocab_size=12, hidden_size=10, num_layers=2, dropout=0.0))


def test_dynamic_evaluation_matches_the_authors_update():
    model = _tiny_lm()
    rng = np.random.default_rng(0)
    train, text = rng.integers(0, 12, 400), rng.integers(0, 12, 123)
    cfg = DynamicConfig(lr=3e-3, lam=0.05, eps=1e-4, bptt=7, stat_batch=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    total, count = dynamic_loss(model, text, gradient_rms(model, train, cfg), cfg)
    assert count == 122
    assert total == pytest.approx(reference_dynamic(model, text, train, 3e-3, 0.05, 1e-4, 7, 6), rel=1e-4)
    # the model is as it was, and without steps the figure is the usual carried-state one
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    static, _ = dynamic_loss(model, text, gradient_rms(model, train, cfg), DynamicConfig(lr=0.0, lam=0.0, bptt=7))
    assert static == pytest.approx(stateful_loss(model, text, batch_size=1)[0], rel=1e-5)


def test_dynamic_evaluation_learns_what_it_reads():
    """A sentence the bundled Shakespeare model has never seen, read eight times: its carried state barely
    copies it (about 2.4 nats a character every time), while the steps taken on the first readings make the
    later ones cheap."""
    import lstmgen

    gen = lstmgen.load("shakespeare-char")
    encode = gen.tokenizer.encode
    text = np.array(encode("the quick brown fox jumps over the lazy dog; " * 8))
    rms = gradient_rms(gen.model, np.array(encode("KING RICHARD:\nNow is the winter of our discontent\n" * 3)),
                       DynamicConfig(stat_batch=4))
    best, loss = dynamic_tune(gen.model, text, rms, DynamicConfig(), lrs=(1e-4, 1e-2), lams=(0.02,))
    static = stateful_loss(gen.model, text, batch_size=1)[0] / (len(text) - 1)
    assert static > 2.0 and best.lr == 1e-4 and loss < 0.5 * static, (best, loss, static)


def test_dynamic_settings_are_checked():
    for bad in ({"lr": -1.0}, {"lam": 2.0}, {"eps": 0.0}, {"bptt": 0}, {"bptt": 2.5}, {"stat_tokens": 0}):
        with pytest.raises(UserInputError):
            DynamicConfig(**bad)


def test_eval_cli_reports_dynamic_evaluation(tiny_model_dir, corpus_file, capsys):
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--dynamic-tune", "--dynamic-stat-tokens",
                 "2000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["dynamic"]
    assert d["bptt"] == 20 and d["tuned_on"].startswith("valid") and d["perplexity"] > 1 and d["optimistic"]
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--dynamic-lr", "0", "--dynamic-lambda",
                 "0", "--dynamic-stat-tokens", "500", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dynamic"]["perplexity"] == pytest.approx(r["perplexity"], rel=1e-5)  # no steps: the static figure
    assert main(["eval", str(tiny_model_dir), "--data", str(corpus_file), "--dynamic-tune", "--dynamic-lr", "1"]) == 2
    assert main(["eval", str(tiny_model_dir), "--samples", "1", "--dynamic"]) == 2
    assert "give --data" in capsys.readouterr().err
