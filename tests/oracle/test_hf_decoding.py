"""Decoding against transformers' generate() as the oracle: beam search and greedy decoding over the same
model calls and options give the same tokens, hypotheses and scores (exactly equal beam scores may order
differently: at most 1 case in 300)."""
import random

import pytest
import torch

import lstmgen
from lstmgen.generation import GenerationConfig, beam_search, lm_beam_search
from lstmgen.generation.processors import TokenRules

from .hf import OracleLM, as_lists, hf_beam_search, same, table_fn

pytestmark = pytest.mark.filterwarnings("ignore")


def ours(fn, prompts, cfg, bans=()):
    """lstmgen's beam search over a function of the whole sequence (the state is the token ids so far)."""
    def step(tokens, ids):
        if tokens is not None:
            ids = torch.cat([ids, tokens[:, None].to(ids)], 1)
        return fn(ids).float().log_softmax(-1), ids

    return beam_search(step, lambda ids, index: ids[index], prompts, prompts.tolist(), cfg,
                       TokenRules(bans=tuple(map(tuple, bans))))


def random_case(rng: random.Random, case: int):
    V, K, B, P = rng.choice([5, 8, 13, 65]), rng.randint(2, 6), rng.randint(1, 3), rng.randint(1, 4)
    g = torch.Generator().manual_seed(case)
    table = torch.randn(97, V, generator=g) * rng.choice([0.5, 2.0, 6.0])
    if rng.random() < 0.3:
        table = table.round()  # many exactly equal scores
    eos = rng.randrange(V) if rng.random() < 0.85 else None
    opts = dict(num_beams=K, num_return_sequences=rng.randint(1, K), max_new_tokens=rng.randint(1, 12),
                length_penalty=rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0]),
                early_stopping=rng.choice([True, False, "never"]), eos_token_id=eos, temperature=0)
    if rng.random() < 0.3:
        opts["repetition_penalty"] = rng.choice([1.3, 0.8])
    if rng.random() < 0.2:
        opts["no_repeat_ngram_size"] = rng.randint(1, 3)
    if rng.random() < 0.2 and eos is not None:
        opts["min_new_tokens"] = rng.randint(1, 4)
    if rng.random() < 0.2:
        opts["logit_bias"] = {rng.randrange(V): rng.uniform(-5, 5) for _ in range(2)}
    bans = [[rng.randrange(V) for _ in range(rng.randint(1, 2))] for _ in range(rng.randint(0, 2))] \
        if rng.random() < 0.2 else []
    bans = [b for b in bans if b != [eos]]  # transformers drops a ban of eos alone
    return V, table_fn(table), torch.randint(0, V, (B, P), generator=g), GenerationConfig(**opts), bans


def test_random_toy_models_agree_with_transformers():
    """600 random cases: vocabularies of 5 to 65, 2-6 beams, 1-3 prompts at once, every early_stopping,
    positive, zero and negative length penalties, ties, processors, bans; with and without eos."""
    rng, cases, differ = random.Random(0), 600, []
    for case in range(cases):
        V, fn, prompts, cfg, bans = random_case(rng, case)
        got, want = as_lists(ours(fn, prompts, cfg, bans)), hf_beam_search(fn, V, prompts, cfg, bans)
        if not all(same(a, b) for a, b in zip(got, want)):
            differ.append((case, cfg, got, want))
    assert len(differ) <= cases // 300, differ[:3]


def test_finished_beams_only_and_the_last_step_counts():
    """Two beams, eos the likeliest token for one of them: transformers returns finished hypotheses,
    never a beam cut short; at max_new_tokens the last step's candidates are hypotheses too."""
    V, eos = 6, 5
    table = torch.full((97, V), -4.0)
    table[:, eos] = 0.0  # eos is likely everywhere ...
    table[:, 1] = 0.5  # ... and one token likelier still
    fn = table_fn(table)
    prompts = torch.tensor([[2, 3]])
    for early in (True, False, "never"):
        for max_new in (1, 2, 6):
            cfg = GenerationConfig(num_beams=2, num_return_sequences=2, eos_token_id=eos, max_new_tokens=max_new,
                                   length_penalty=0.0, early_stopping=early, temperature=0)
            (got,) = ours(fn, prompts, cfg)
            assert same([(o.token_ids, o.score) for o in got], hf_beam_search(fn, V, prompts, cfg)[0])
            for o in got:
                assert o.finish_reason == ("eos" if o.token_ids[-1] == eos else "length")
                assert o.finish_reason == "eos" or len(o.token_ids) == max_new


def lm_fn(model, prompt_len: int):
    """The LM's next-token logits for whole sequences, computed as lstmgen's decoding does: the prompt
    through the packed forward, then one step per token with (h, c) carried."""
    @torch.inference_mode()
    def fn(ids):
        out, state = model(ids[:, :prompt_len])
        logits = out[:, -1]
        for t in range(prompt_len, ids.shape[1]):
            logits, state = model.step(ids[:, t], state)
        return logits.float()

    return fn


@pytest.mark.parametrize("early", [True, False, "never"])
def test_the_bundled_model_agrees_with_transformers(early):
    """shakespeare-char with eos " " (a token it produces often) and with no eos, several options."""
    gen = lstmgen.load("shakespeare-char")
    V = gen.tokenizer.vocab_size
    space = gen.tokenizer.encode(" ")[0]
    cases = [dict(num_beams=2, num_return_sequences=2, eos_token_id=space, max_new_tokens=40, length_penalty=0.0),
             dict(num_beams=4, num_return_sequences=3, eos_token_id=space, max_new_tokens=12, length_penalty=1.0),
             dict(num_beams=3, num_return_sequences=1, eos_token_id=None, max_new_tokens=10, length_penalty=1.0,
                  repetition_penalty=1.3, no_repeat_ngram_size=3),
             dict(num_beams=5, num_return_sequences=5, eos_token_id=gen.tokenizer.encode("\n")[0],
                  max_new_tokens=25, length_penalty=2.0, logit_bias={space: -2.0})]
    differ = 0
    for i, opts in enumerate(cases):
        for prompt in ("ROMEO:", "KING HENRY:\nWhat"):
            cfg = GenerationConfig(**opts, early_stopping=early, temperature=0)
            ids = gen.tokenizer.encode(prompt)
            (got,) = as_lists(lm_beam_search(gen.model, [ids], cfg))
            (want,) = hf_beam_search(lm_fn(gen.model, len(ids)), V, torch.tensor([ids]), cfg)
            differ += not same(got, want, tol=1e-4)
            if opts["eos_token_id"] is not None:  # the example: finished hypotheses, never cut short
                assert all(o[0][-1] == opts["eos_token_id"] or len(o[0]) == opts["max_new_tokens"] for o in got)
    assert differ == 0


def test_seq2seq_search_is_the_same_beam_search():
    """The encoder-decoder's search() reaches the same beam search: feeding <s> first, then its tokens."""
    from lstmgen.generation.search import search

    V, bos = 9, 0
    g = torch.Generator().manual_seed(3)
    fn = table_fn(torch.randn(97, V, generator=g) * 2)
    cfg = GenerationConfig(num_beams=3, num_return_sequences=2, eos_token_id=1, max_new_tokens=8, temperature=0)

    def step(tokens, ids):
        ids = torch.cat([ids, tokens[:, None]], 1)
        return fn(ids).log_softmax(-1), ids

    start = torch.zeros(2, 0, dtype=torch.long)
    got = as_lists(search(step, lambda ids, index: ids[index], start, 2, cfg, bos))
    want = hf_beam_search(fn, V, torch.full((2, 1), bos), cfg)
    assert all(same(a, b) for a, b in zip(got, want))


def test_the_oracle_model_is_what_it_claims():
    """The wrapper gives transformers exactly the function's logits (a check of the test's own tool)."""
    fn = table_fn(torch.randn(97, 7, generator=torch.Generator().manual_seed(0)))
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(OracleLM(fn, 7)(ids).logits[:, -1], fn(ids))


def test_greedy_with_processors_matches_transformers_on_the_bundled_model():
    """Greedy decoding through generate() (the sampling engine) with every processor both libraries have,
    combined: their order decides the text within a few tokens."""
    from .hf import hf_config

    gen = lstmgen.load("shakespeare-char")
    V, space = gen.tokenizer.vocab_size, gen.tokenizer.encode(" ")[0]
    e = gen.tokenizer.encode("e")[0]
    opts = dict(max_new_tokens=80, temperature=0, repetition_penalty=1.4, no_repeat_ngram_size=4,
                logit_bias={space: 1.5, e: -0.75})
    for prompt in ("ROMEO:", "First Citizen:\nWe"):
        ids = gen.tokenizer.encode(prompt)
        got = gen.generate(prompt, **opts).token_ids
        model = OracleLM(lm_fn(gen.model, len(ids)), V)
        want = model.generate(torch.tensor([ids]), generation_config=hf_config(GenerationConfig(**opts)))
        assert got == want[0, len(ids):].tolist()


def test_a_search_with_every_token_banned_returns_empty_hypotheses():
    """No beam can reach max_new_tokens (no_repeat_ngram_size 1 over 3 tokens): transformers returns only
    filler; lstmgen returns the asked number of empty outputs scored -inf, never a beam cut short."""
    fn = table_fn(torch.randn(97, 3, generator=torch.Generator().manual_seed(1)))
    cfg = GenerationConfig(num_beams=2, num_return_sequences=2, max_new_tokens=5, no_repeat_ngram_size=1,
                           temperature=0)
    prompts = torch.tensor([[0]])
    (got,) = ours(fn, prompts, cfg)
    assert hf_beam_search(fn, 3, prompts, cfg) == [[]]
    assert [(o.token_ids, o.score) for o in got] == [([], float("-inf"))] * 2
