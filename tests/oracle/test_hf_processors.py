"""Logits processors and warpers against transformers' own, built by its generate() machinery for the
same options (so its order is the oracle too): random logits over vocabularies of 65 and 8,000, batches
whose rows carry different options, ties, -inf already present, flat and very peaked distributions,
top_k above the vocabulary, top_p 1.0. Every row must come out bit for bit as transformers makes it."""
import random

import pytest
import torch

from lstmgen.generation import GenerationConfig, History, TokenRules, apply_processors, warp

from .hf import hf_processors

pytestmark = pytest.mark.filterwarnings("ignore")
EOS = 3


def random_logits(rng: random.Random, g: torch.Generator, V: int) -> torch.Tensor:
    kind = rng.choice(["normal", "ties", "inf", "flat", "peaked", "wide"])
    x = torch.randn(V, generator=g)
    if kind == "ties":  # a few distinct values: cut-offs fall inside groups of equal scores
        x = (x * 2).round() / 2
    elif kind == "inf":
        x[torch.rand(V, generator=g) < 0.3] = float("-inf")
    elif kind == "flat":
        x = torch.full((V,), 0.7)
    elif kind == "peaked":
        x[rng.randrange(V)] += 40.0
    elif kind == "wide":
        x = x * 12
    return x


def random_options(rng: random.Random, V: int, sampling: bool) -> dict:
    opts = dict(temperature=rng.choice([0.3, 0.7, 1.0, 1.6]) if sampling else 0.0,
                top_k=rng.choice([None, 1, 2, 7, V, V + 10]), top_p=rng.choice([1.0, 0.95, 0.7, 0.3, 0.05]),
                min_p=rng.choice([0.0, 0.0, 0.05, 0.3, 1.0]), typical_p=rng.choice([1.0, 1.0, 0.95, 0.6, 0.2]),
                repetition_penalty=rng.choice([1.0, 1.0, 1.3, 0.7]), no_repeat_ngram_size=rng.choice([0, 0, 1, 2, 3]),
                min_new_tokens=rng.choice([0, 0, 2, 6]), eos_token_id=EOS)
    if rng.random() < 0.3:
        opts["logit_bias"] = {rng.randrange(V): rng.choice([-100.0, -3.5, 2.25, 100.0]) for _ in range(3)}
    return opts


def random_batch(rng: random.Random, V: int, rows: int, sampling: bool):
    """A History of rows added one by one (each its own options, prompt, generated tokens, bans) and the
    same rows as transformers sees them."""
    g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    h, want_rows = History(V), []
    small = min(V, 12)  # tokens from a small range, so that penalties, n-grams and bans meet
    for _ in range(rows):
        cfg = GenerationConfig(**random_options(rng, V, sampling))
        prompt = [rng.randrange(small) for _ in range(rng.randint(1, 8))]
        generated = [rng.randrange(small) for _ in range(rng.randint(0, 8))]
        bans = [[rng.randrange(small) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(0, 3))]
        bans = [b for b in bans if b != [EOS]]  # transformers drops a ban of eos alone
        h.add([prompt], cfg, TokenRules(bans=tuple(map(tuple, bans))), EOS)
        want_rows.append((cfg, prompt, generated, bans))
    for t in range(max(len(w[2]) for w in want_rows)):  # the generated tokens, one step at a time
        h.append(torch.tensor([w[2][t] if t < len(w[2]) else 0 for w in want_rows]),
                 skip=[t >= len(w[2]) for w in want_rows])
    logits = torch.stack([random_logits(rng, g, V) for _ in range(rows)])
    return h, want_rows, logits


def transformers_rows(want_rows, logits, sampling: bool) -> torch.Tensor:
    out = []
    for (cfg, prompt, generated, bans), x in zip(want_rows, logits):
        procs = hf_processors(cfg, len(prompt), x.shape[-1], bans, do_sample=sampling)
        out.append(procs(torch.tensor([prompt + generated]), x[None].clone())[0])
    return torch.stack(out)


def mismatches(ours: torch.Tensor, theirs: torch.Tensor) -> list:
    return [b for b in range(len(ours)) if not torch.equal(ours[b], theirs[b])]


@pytest.mark.parametrize("V,batches", [(65, 400), (8000, 150)])
def test_sampling_processors_and_warpers_match_transformers(V, batches):
    rng, bad, total = random.Random(V), [], 0
    for _ in range(batches):
        h, rows, logits = random_batch(rng, V, rng.randint(1, 8), sampling=True)
        ours = warp(apply_processors(logits.clone(), h), h.params)
        theirs = transformers_rows(rows, logits, sampling=True)
        bad += [rows[b][0] for b in mismatches(ours, theirs)]
        total += len(rows)
    assert total >= 3 * batches and not bad, bad[:3]


@pytest.mark.parametrize("V", [65, 8000])
def test_beam_processors_match_transformers(V):
    """Beam search's processors run on log-probabilities, without warpers."""
    rng, bad = random.Random(V + 1), []
    for _ in range(60):
        h, rows, logits = random_batch(rng, V, rng.randint(1, 6), sampling=False)
        logp = logits.log_softmax(-1)
        bad += mismatches(apply_processors(logp.clone(), h), transformers_rows(rows, logp, sampling=False))
    assert not bad


def test_cut_offs_keep_ties_as_transformers_does():
    """typical_p's cut-off falls inside a group of equal scores: every tied token stays."""
    V = 65
    x = torch.zeros(V)
    x[:4] = 3.0  # four equally likely tokens, then a flat tail
    for mass in (0.3, 0.5, 0.9):
        h = History(V)
        cfg = GenerationConfig(temperature=1.0, typical_p=mass)
        h.add([[1]], cfg)
        ours = warp(x[None].clone(), h.params)[0]
        theirs = hf_processors(cfg, 1, V)(torch.tensor([[1]]), x[None].clone())[0]
        assert torch.equal(ours, theirs)
        kept = ours > float("-inf")
        assert bool(kept[:4].all() == kept[:4].any())  # the tied group is kept or dropped whole
