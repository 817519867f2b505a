"""The decoder's continuous batching: rows with their own options join and leave between steps."""
import pytest
import torch

import lstmgen
from lstmgen.generation import SamplingDecoder


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return lstmgen.load(tiny_model_dir)


def run_alone(gen, prompt, **opts):
    return gen.generate(prompt, **opts)


def drain(dec, jobs):
    pieces = {id(j): [""] * len(j.rows) for j in jobs}
    while any(not j.done for j in jobs):
        for row, tok in dec.step():
            slot, piece = row.owner.push(row, tok)
            pieces[id(row.owner)][slot] += piece
    return pieces


def test_requests_joining_midway_get_the_text_they_get_alone(gen):
    a_opts = dict(max_new_tokens=60, temperature=0.9, seed=3)
    b_opts = dict(max_new_tokens=25, temperature=0, repetition_penalty=1.3)
    c_opts = dict(max_new_tokens=40, temperature=1.2, top_k=5, top_p=0.9, seed=11, stop=["\n\n"])
    dec = SamplingDecoder(gen.model)
    a = gen.new_job(dec, ["KING:"], a_opts)
    for _ in range(7):  # a runs alone for a while, then b and c join; b leaves early
        for row, tok in dec.step():
            row.owner.push(row, tok)
    b = gen.new_job(dec, ["ROMEO:\nI"], b_opts)
    c = gen.new_job(dec, ["First Citizen:", "Second"], c_opts)
    assert len(dec) == 4
    drain(dec, [a, b, c])
    assert a.results()[0] == run_alone(gen, "KING:", **a_opts)
    assert b.results()[0] == run_alone(gen, "ROMEO:\nI", **b_opts)
    assert c.results() == gen.generate(["First Citizen:", "Second"], **c_opts)
    assert dec.step() == [] and len(dec) == 0  # finished rows have left the batch


@pytest.mark.parametrize("inline", [0, 4, 64])
def test_short_prompts_read_by_the_shared_step_give_the_same_text(gen, inline):
    dec = SamplingDecoder(gen.model, inline_prefill=inline)
    a = gen.new_job(dec, ["KING:"], dict(max_new_tokens=30, seed=5))
    for _ in range(3):
        for row, tok in dec.step():
            row.owner.push(row, tok)
    prompts = ["QUEEN:", "First Lord:\nThe king"]
    b = gen.new_job(dec, prompts, dict(max_new_tokens=30, seed=9, repetition_penalty=1.2, no_repeat_ngram_size=3))
    drain(dec, [a, b])
    assert a.results()[0] == run_alone(gen, "KING:", max_new_tokens=30, seed=5)
    assert b.results() == gen.generate(prompts, max_new_tokens=30, seed=9, repetition_penalty=1.2,
                                       no_repeat_ngram_size=3)
    first = b.results()[0]
    cont = SamplingDecoder(gen.model, inline_prefill=inline)  # a state passed back in continues the text
    c = gen.new_job(cont, [" and"], dict(max_new_tokens=10, seed=1), [first.state])
    drain(cont, [c])
    assert c.results()[0] == gen.generate(" and", state=first.state, max_new_tokens=10, seed=1)


def test_streamed_pieces_join_to_the_result(gen):
    dec = SamplingDecoder(gen.model)
    jobs = [gen.new_job(dec, ["KING:"], dict(max_new_tokens=30, seed=s, stop=["e"])) for s in range(3)]
    pieces = drain(dec, jobs)
    for j in jobs:
        assert pieces[id(j)][0] == j.results()[0].completion
        assert "e" not in j.results()[0].completion


def test_cancelled_rows_leave_and_others_continue(gen):
    dec = SamplingDecoder(gen.model)
    a = gen.new_job(dec, ["KING:"], dict(max_new_tokens=50, seed=1))
    b = gen.new_job(dec, ["KING:"], dict(max_new_tokens=50, seed=2))
    for row, tok in dec.step():
        row.owner.push(row, tok)
    a.cancel()
    drain(dec, [b])
    assert a.done and len(a.rows[0].out.token_ids) == 1
    assert b.results()[0] == run_alone(gen, "KING:", max_new_tokens=50, seed=2)


def test_per_row_logprobs_and_top_logprobs(gen):
    dec = SamplingDecoder(gen.model)
    a = gen.new_job(dec, ["KING:"], dict(max_new_tokens=5, logprobs=True, top_logprobs=3, seed=0))
    b = gen.new_job(dec, ["KING:"], dict(max_new_tokens=5, seed=0))
    drain(dec, [a, b])
    ra, rb = a.results()[0], b.results()[0]
    assert ra == rb and rb.logprobs is None and len(ra.logprobs) == 5
    for chosen, lp, top in zip(ra.token_ids, ra.logprobs, ra.top_logprobs):
        assert len(top) == 3 and max(top.values()) >= lp
        assert chosen not in top or top[chosen] == pytest.approx(lp)


def test_inverse_cdf_sampling_matches_the_distribution():
    from lstmgen.generation.processors import sample

    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    tok = sample(probs, torch.rand(20000, generator=g))
    freq = torch.bincount(tok, minlength=4).float() / 20000
    assert freq[1] == 0 and torch.allclose(freq, probs[0], atol=0.015)
    assert sample(probs[:1], torch.tensor([0.99999999])).item() == 3  # never a zero-probability token


def test_prefill_of_fresh_and_continued_rows_in_one_call_gives_each_its_own(gen):
    from lstmgen.generation import prefill

    first = gen.generate("KING:", max_new_tokens=6, temperature=0)
    ids = [gen.tokenizer.encode(p) for p in ("O", "ROMEO:", "O", "ab")]
    states = [None, first.state, None, first.state]  # continued rows between fresh ones; "O" twice
    logits, (h, c) = prefill(gen.model, ids, states)
    for b in range(4):
        one, (h1, c1) = prefill(gen.model, [ids[b]], [states[b]])
        assert torch.allclose(logits[b], one[0], atol=1e-5)
        assert torch.allclose(h[:, b], h1[:, 0], atol=1e-6) and torch.allclose(c[:, b], c1[:, 0], atol=1e-5)
