"""DRY ("don't repeat yourself"): the penalties against a plain transcription of the published algorithm,
and its effect on decoding."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lstmgen
from lstmgen.errors import UserInputError
from lstmgen.generation import GenerationConfig
from lstmgen.generation.processors import dry_penalties
from lstmgen.generation.quality import repeat_rate


def reference(tokens, multiplier, base, allowed, last_n, breakers):
    """text-generation-webui's DRYLogitsProcessor, one row, loop by loop (its structure, our names)."""
    ids = tokens[-last_n:] if last_n else list(tokens)
    if len(ids) < 2 or ids[-1] in breakers:
        return {}
    match_lengths = {}
    for i in [j for j in range(len(ids) - 1) if ids[j] == ids[-1]]:
        next_token = ids[i + 1]
        if next_token in breakers:
            continue
        match_length = 1
        while True:
            j = i - match_length
            if j < 0:
                break
            previous = ids[-(match_length + 1)]
            if ids[j] != previous or previous in breakers:
                break
            match_length += 1
        match_lengths[next_token] = max(match_length, match_lengths.get(next_token, 0))
    return {t: multiplier * base ** (n - allowed) for t, n in match_lengths.items() if n >= allowed}


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(st.integers(0, 4), min_size=0, max_size=60), allowed=st.integers(1, 4),
       last_n=st.sampled_from([0, 5, 20]), breakers=st.sets(st.integers(0, 4), max_size=2),
       base=st.floats(1.1, 3.0), multiplier=st.floats(0.1, 2.0))
def test_penalties_equal_the_reference(tokens, allowed, last_n, breakers, base, multiplier):
    cfg = GenerationConfig(dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed,
                           dry_penalty_last_n=last_n)
    toks, pens = dry_penalties(tokens, cfg, frozenset(breakers))
    want = reference(tokens, multiplier, base, allowed, last_n, breakers)
    assert dict(zip(toks.tolist(), pens.tolist())) == pytest.approx(want, rel=1e-6)


def test_a_worked_example():
    # "a b c d | a b c" : the last three tokens repeat "a b c", whose next token was d -> length 3
    cfg = GenerationConfig(dry_multiplier=0.8, dry_base=2.0, dry_allowed_length=2)
    a, b, c, d, sep = 0, 1, 2, 3, 9
    toks, pens = dry_penalties([a, b, c, d, sep, a, b, c], cfg, frozenset())
    assert toks.tolist() == [d] and pens.tolist() == pytest.approx([0.8 * 2.0 ** (3 - 2)])
    # a breaker inside the repeat cuts it: "sep a b c" vs "d a b c" is only 3 long either way, but with
    # b as a breaker the repeat "c" alone (length 1) is below the allowed length
    assert dry_penalties([a, b, c, d, sep, a, b, c], cfg, frozenset({b}))[0].tolist() == []
    # the text ending in a breaker: nothing is penalized
    assert dry_penalties([a, b, sep, a, b, sep], cfg, frozenset({sep}))[0].tolist() == []


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return lstmgen.load(tiny_model_dir)


def test_dry_breaks_greedy_loops(gen):
    prompts = ["KING:", "QUEEN:", "First"]
    plain = gen.generate(prompts, max_new_tokens=300, temperature=0)
    dry = gen.generate(prompts, max_new_tokens=300, temperature=0, dry_multiplier=0.8, dry_allowed_length=4)
    before, after = repeat_rate([o.completion for o in plain]), repeat_rate([o.completion for o in dry])
    assert before > 0.2 and after < before / 2, (before, after)


def test_rows_without_dry_are_untouched_in_a_shared_batch(gen):
    """The server steps rows with different options together: a row without DRY decodes as alone."""
    from lstmgen.generation import SamplingDecoder

    alone = gen.generate("KING:", max_new_tokens=60, temperature=0).token_ids
    dec = SamplingDecoder(gen.model)
    plain = gen.new_job(dec, ["KING:"], {"max_new_tokens": 60, "temperature": 0})
    gen.new_job(dec, ["KING:"], {"max_new_tokens": 60, "temperature": 0, "dry_multiplier": 2.0,
                                 "dry_allowed_length": 2})
    while not dec.done:
        for row, tok in dec.step():
            row.owner.push(row, tok)
    assert plain.results()[0].token_ids == alone


def test_breakers_are_the_tokens_holding_them(gen):
    _, rules = gen._setup({"dry_multiplier": 0.8, "dry_sequence_breakers": ["\n", ":"]})
    pieces = {gen.tokenizer.decode([i]) for i in rules.breakers}
    assert pieces == {"\n", ":"}
    _, off = gen._setup({})
    assert off.breakers == frozenset()  # not worked out when DRY is off


@pytest.mark.parametrize("opts, name", [({"dry_multiplier": -1}, "dry_multiplier"), ({"dry_base": 1.0}, "dry_base"),
                                        ({"dry_allowed_length": 0}, "dry_allowed_length"),
                                        ({"dry_penalty_last_n": -1}, "dry_penalty_last_n"),
                                        ({"dry_sequence_breakers": ["\n", ""]}, "dry_sequence_breakers")])
def test_bad_dry_options_name_the_option(gen, opts, name):
    with pytest.raises(UserInputError, match=name):
        gen.generate("x", max_new_tokens=2, **opts)


def test_long_loops_cost_a_bounded_scan():
    """A text that is one long loop: the repeat is measured up to DRY_MAX_MATCH, the penalty stays finite."""
    cfg = GenerationConfig(dry_multiplier=0.8)
    toks, pens = dry_penalties([1, 2, 3] * 2000, cfg, frozenset())
    assert toks.tolist() == [1] and np.isfinite(pens).all() and pens[0] > 1e10
