"""Blocks of decoding steps (generation/blocks.py) give what step-by-step decoding gives.

On a CPU the block runs its steps eagerly; tests/test_cuda.py checks the captured CUDA graph against
the same steps on a GPU.
"""
import time

import numpy as np
import pytest
import torch

import lstmgen
from lstmgen.generation import GenerationConfig, SamplingDecoder
from lstmgen.generation.blocks import block_size
from lstmgen.generation.uniforms import uniforms


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return lstmgen.load(tiny_model_dir)


def run(gen, prompts, block_steps, pipeline=4, ahead=False, **opts):
    dec = SamplingDecoder(gen.model, block_steps=block_steps, graphs=False, pipeline=pipeline, ahead=ahead)
    job = gen.new_job(dec, prompts, opts)
    pieces = [""] * len(prompts)
    for slot, piece in job.run():
        pieces[slot] += piece
    return job.results(), pieces


def assert_same(a, b):
    assert [str(r) for r in a] == [str(r) for r in b]
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.finish_reason == y.finish_reason
        # step by step, finished rows leave the batch; a matrix product of another batch size may round
        # the last bit differently
        assert torch.allclose(x.state.h, y.state.h, rtol=0, atol=1e-6)
        assert torch.allclose(x.state.c, y.state.c, rtol=0, atol=1e-5)
        assert x.state.pending == y.state.pending


OPTIONS = [
    dict(temperature=0.8, seed=1),
    dict(temperature=1.1, top_k=7, seed=2),
    dict(temperature=1.0, top_p=0.8, min_p=0.05, seed=3),
    dict(temperature=0.9, typical_p=0.7, seed=4),
    dict(temperature=0),
    dict(temperature=1.0, logit_bias={5: 4.0, 6: -100.0}, bad_words=["e"], seed=5),
]


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("opts", OPTIONS)
def test_blocks_give_the_step_by_step_tokens_ends_and_states(gen, opts, ahead):
    prompts = ["KING:", "ROMEO:\nI will", "a"]
    step, step_pieces = run(gen, prompts, 0, max_new_tokens=45, **opts)
    block, block_pieces = run(gen, prompts, 8, 2, ahead, max_new_tokens=45, **opts)
    assert_same(step, block)
    assert block_pieces == [str(r)[len(p):] for r, p in zip(block, prompts)] == step_pieces


@pytest.mark.parametrize("pipeline,ahead", [(1, False), (4, False), (1, True), (3, True)])
def test_rows_that_end_inside_a_block_keep_the_state_they_ended_at(gen, pipeline, ahead):
    eos = gen.tokenizer.encode(" ")[0]  # frequent: rows end at different steps inside blocks
    step, _ = run(gen, ["KING:", "Second", "O"], 0, max_new_tokens=50, eos_token_id=eos, temperature=1.0, seed=9)
    block, _ = run(gen, ["KING:", "Second", "O"], 4, pipeline, ahead, max_new_tokens=50, eos_token_id=eos,
                   temperature=1.0, seed=9)
    assert {r.finish_reason for r in block} == {"eos"}
    assert len({len(r.token_ids) for r in block}) > 1
    assert_same(step, block)
    # and a text continued from such a state goes on as it would have
    more_step = gen.generate("", state=step[0].state, max_new_tokens=20, temperature=0.7, seed=1)
    dec = SamplingDecoder(gen.model, block_steps=4, graphs=False)
    job = gen.new_job(dec, [""], dict(max_new_tokens=20, temperature=0.7, seed=1), [block[0].state])
    list(job.run())
    assert job.results()[0].token_ids == more_step.token_ids


def test_options_that_need_the_text_so_far_fall_back_to_single_steps(gen):
    for opts in (dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=3), dict(logprobs=True),
                 dict(min_new_tokens=5, eos_token_id=3)):
        dec = SamplingDecoder(gen.model, block_steps=8, graphs=False)
        job = gen.new_job(dec, ["KING:"], dict(max_new_tokens=12, temperature=0.8, seed=0, **opts))
        sizes = []
        while not job.done:
            sizes += [len(t) for _, t in dec.advance()]
        assert set(sizes) == {1}
        alone = gen.generate("KING:", max_new_tokens=12, temperature=0.8, seed=0, **opts)
        assert job.rows[0].out.token_ids == alone.token_ids


def test_a_block_never_runs_past_the_longest_row():
    assert [block_size(n, 32) for n in (1, 2, 3, 12, 31, 32, 300)] == [1, 2, 2, 8, 16, 32, 32]


def test_uniforms_depend_on_the_key_and_the_count_only():
    keys = np.array([1, 2**64 - 1, 12345], dtype=np.uint64)
    u = uniforms(keys, np.zeros(3, dtype=np.uint64), 50)
    assert u.shape == (50, 3) and (u >= 0).all() and (u < 1).all()
    later = uniforms(keys[1:2], np.array([20], dtype=np.uint64), 30)
    assert np.array_equal(later[:, 0], u[20:, 1])  # a row's numbers do not depend on the others
    many = uniforms(np.arange(200, dtype=np.uint64), np.zeros(200, dtype=np.uint64), 100).ravel()
    assert abs(many.mean() - 0.5) < 0.01 and abs(many.var() - 1 / 12) < 0.005
    assert len(np.unique(many)) == many.size


def test_a_decoder_reuses_its_blocks_for_later_batches_with_their_own_options(gen):
    dec = SamplingDecoder(gen.model, block_steps=8, graphs=False)
    for opts in (dict(temperature=0.7, top_k=5, seed=1), dict(temperature=1.3, top_k=5, seed=2)):
        job = gen.new_job(dec, ["KING:", "O"], dict(max_new_tokens=24, **opts))
        list(job.run())
        assert job.results() == gen.generate(["KING:", "O"], max_new_tokens=24, **opts)
    # one step after the prefill, then two blocks of 8 back to back (two buffers), blocks of 4, 2 and 1:
    # five blocks, made once
    assert len(dec._blocks.blocks) == 5


def test_a_bfloat16_model_decodes_in_blocks_as_step_by_step(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    gen.model.to(torch.bfloat16)
    step, _ = run(gen, ["KING:", "O"], 0, max_new_tokens=30, temperature=0.9, seed=2)
    block, _ = run(gen, ["KING:", "O"], 8, max_new_tokens=30, temperature=0.9, seed=2)
    assert [r.token_ids for r in step] == [r.token_ids for r in block]
    assert block[0].state.h.dtype == torch.bfloat16


def test_a_shape_is_captured_at_its_second_use_and_kept(gen, monkeypatch):
    from lstmgen.generation import blocks

    made = []

    class FakeBlock:  # records whether the cache asked for a graph; CUDA graphs need a GPU
        def __init__(self, model, params, batch, steps, graph):
            self.graph = object() if graph else None
            made.append((batch, steps, graph))

        def load(self, params):
            pass

    monkeypatch.setattr(blocks, "Block", FakeBlock)
    cache = blocks.BlockCache(graph=True)
    dec = SamplingDecoder(gen.model, block_steps=8, blocks=cache)
    dec.add([[1, 2]], GenerationConfig(max_new_tokens=5))
    P = dec.history.params
    first, second, third = (cache.get(gen.model, P, 1, 8) for _ in range(3))
    assert first.graph is None and second.graph is not None and third is second
    assert made == [(1, 8, False), (1, 8, True)]
    gen.model.to(torch.float64)  # moved weights: a new shape for the cache
    try:
        assert cache.get(gen.model, P, 1, 8).graph is None
    finally:
        gen.model.to(torch.float32)


def decode(model, batches, block_steps):
    """Rows added in groups with their own options to one decoder, then advanced to the end."""
    dec = SamplingDecoder(model, block_steps=block_steps, graphs=False)
    rows = [row for prompts, cfg in batches for row in dec.add(prompts, cfg)]
    while not dec.done:
        dec.advance()
    return [r.out for r in rows]


def test_rows_with_their_own_lengths_and_ends_in_one_block_run(gen):
    """Rows of other max_new_tokens and eos in one batch end at their own steps, inside blocks."""
    prompts = [gen.tokenizer.encode(p) for p in ("KING:", "O", "Second")]
    eos = gen.tokenizer.encode(" ")[0]
    batches = [(prompts, GenerationConfig(max_new_tokens=13, temperature=1.0, seed=3)),
               (prompts[:2], GenerationConfig(max_new_tokens=37, temperature=0.8, seed=4, eos_token_id=eos)),
               (prompts[2:], GenerationConfig(max_new_tokens=29, temperature=0))]
    step, block = decode(gen.model, batches, 0), decode(gen.model, batches, 8)
    assert [len(o.token_ids) for o in block[:3]] == [13] * 3 and len(block[5].token_ids) == 29
    assert {o.finish_reason for o in block[3:5]} == {"eos"}
    for a, b in zip(step, block):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert a.state.pending == b.state.pending == a.token_ids[-1:]


def test_max_time_ends_rows_at_a_block_boundary_with_their_state(gen, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    dec = SamplingDecoder(gen.model, block_steps=8, graphs=False)
    cfg = GenerationConfig(max_new_tokens=200, max_time=10.0, temperature=1.0, seed=1)
    rows = dec.add([gen.tokenizer.encode(p) for p in ("KING:", "O")], cfg)
    dec.step()  # the first token, from the prefill's logits
    clock[0] = 11.0  # past the deadline: the rows end with the first block that is read
    while not dec.done:
        dec.advance()
    for r in rows:
        assert r.out.finish_reason == "length" and len(r.out.token_ids) == 9
        assert r.out.state.pending == r.out.token_ids[-1:]


def test_a_block_queued_ahead_for_nothing_gives_its_random_numbers_back(gen):
    """The caller adds rows, asks for fewer steps or steps itself after an advance() that queued a block
    ahead: the rows' texts are those of a decoder that never queued it."""
    prompts = [gen.tokenizer.encode(p) for p in ("KING:", "O")]
    cfg = GenerationConfig(max_new_tokens=60, temperature=1.0, seed=5)
    later = GenerationConfig(max_new_tokens=20, temperature=0.9, seed=6)

    def drive(ahead: bool):
        dec = SamplingDecoder(gen.model, block_steps=8, graphs=False, pipeline=2, ahead=ahead)
        rows = dec.add(prompts, cfg)
        dec.advance()  # the step after the prefill
        dec.advance()  # two blocks (and one queued ahead)
        dec.advance(limit=4)  # fewer steps than the block queued
        dec.advance()
        rows += dec.add(prompts[:1], later)  # a newcomer: the batch changes shape
        dec.advance()
        dec.advance()
        dec.step()
        while not dec.done:
            dec.advance()
        return [(r.out.token_ids, r.out.finish_reason, r.out.state.pending) for r in rows]

    assert drive(True) == drive(False)


def test_a_block_queued_ahead_is_the_next_calls_first(gen, monkeypatch):
    from lstmgen.generation import blocks

    started, queued = [], []
    start, queue = blocks.Block.start, SamplingDecoder._queue_ahead
    monkeypatch.setattr(blocks.Block, "start", lambda self, *a: started.append(self.steps) or start(self, *a))

    def counted_queue(dec, *a):
        queue(dec, *a)
        queued.append(dec._ahead is not None)

    monkeypatch.setattr(SamplingDecoder, "_queue_ahead", counted_queue)
    counts = {}
    for ahead in (False, True):
        started.clear()
        out, _ = run(gen, ["KING:", "O"], 8, 2, ahead, max_new_tokens=41, temperature=0.8, seed=1)
        counts[ahead] = list(started)
        assert all(len(r.token_ids) == 41 for r in out)
    # 40 tokens in blocks of 8, two a call: blocks were queued ahead, and every one was used, none wasted
    assert sum(queued) == 2 and counts[True] == counts[False] == [8] * 5
    # a caller that asks for 4 steps a call gets blocks of 4 queued ahead, used as well
    dec = SamplingDecoder(gen.model, block_steps=8, graphs=False, ahead=True)
    rows = dec.add([gen.tokenizer.encode("KING:")], GenerationConfig(max_new_tokens=25, temperature=0.9, seed=2))
    started.clear()
    while not dec.done:
        dec.advance(limit=4)
    assert started == [4] * 6 and len(rows[0].out.token_ids) == 25
