"""The generation engine: each decoding control does what it claims (on the tiny character model)."""
import pytest
import torch

import lstmgen
from lstmgen.errors import UserInputError
from lstmgen.generation import TextAssembler, lm_beam_search
from lstmgen.tokenizers import Tokenizer


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return lstmgen.load(tiny_model_dir)


def greedy(gen, prompt="KING:", n=40, **kw):
    return gen.generate(prompt, max_new_tokens=n, temperature=0, **kw)


def test_num_beams_1_equals_greedy_and_beams_rank(gen):
    cfg = gen.generation_config.updated(num_beams=1, max_new_tokens=30, temperature=0)
    ids = gen.tokenizer.encode("QUEEN:")
    ((best,),) = lm_beam_search(gen.model, [ids], cfg)
    assert best.token_ids == greedy(gen, "QUEEN:", 30).token_ids
    outs = gen.generate("QUEEN:", max_new_tokens=30, num_beams=4, num_return_sequences=3)
    assert len(outs) == 3 and len({o.completion for o in outs}) == 3
    assert outs[0].score >= outs[1].score >= outs[2].score
    # beam search finds a sequence at least as likely as greedy's
    lp = lambda r: sum(gen.generate("QUEEN:", max_new_tokens=30, temperature=0, logprobs=True).logprobs)  # noqa
    assert outs[0].score * 30 >= lp(None) - 1e-4


@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_new_tokens_gives_the_prompt_back(gen, num_beams):
    """max_new_tokens=0: the empty continuation, finish reason "length", as many as were asked for."""
    for prompt in ("", "KING:"):
        one = gen.generate(prompt, max_new_tokens=0, num_beams=num_beams)
        assert str(one) == prompt and one.token_ids == [] and one.finish_reason == "length"
        two = gen.generate(prompt, max_new_tokens=0, num_beams=num_beams, num_return_sequences=2)
        assert [r.token_ids for r in two] == [[], []]


def test_no_repeat_ngram_leaves_no_repeated_ngram(gen):
    plain = greedy(gen, n=150).token_ids
    grams = lambda ids, n: [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]  # noqa: E731
    assert len(set(grams(plain, 3))) < len(grams(plain, 3))  # greedy alone repeats itself
    for n in (2, 3, 4):
        out = greedy(gen, n=150, no_repeat_ngram_size=n)
        full = gen.tokenizer.encode("KING:") + out.token_ids
        assert len(set(grams(full, n))) == len(grams(full, n))


def repeat_rate(ids):
    return sum(t in ids[:i] for i, t in enumerate(ids)) / len(ids)


def test_penalties_lower_repetition(gen):
    base = gen.generate("KING:", max_new_tokens=120, seed=3, temperature=0.7).token_ids
    rep = gen.generate("KING:", max_new_tokens=120, seed=3, temperature=0.7, repetition_penalty=1.8).token_ids
    freq = gen.generate("KING:", max_new_tokens=120, seed=3, temperature=0.7, frequency_penalty=1.5).token_ids
    assert repeat_rate(rep) < repeat_rate(base)
    most = lambda ids: max(ids.count(t) for t in set(ids))  # noqa: E731
    assert most(freq) < most(base)


def test_stop_strings_cut_exactly_and_stream_agrees(gen):
    full = greedy(gen, n=80).completion
    stop = full[30:33]
    out = greedy(gen, n=80, stop=[stop, "no such stop"])
    assert out.completion == full[: full.index(stop)] and out.finish_reason == "stop"
    pieces = list(gen.stream("KING:", max_new_tokens=80, temperature=0, stop=[stop]))
    assert "".join(pieces) == out.completion
    assert greedy(gen, n=80).finish_reason == "length"


def test_stream_equals_generate_with_every_control(gen):
    opts = dict(max_new_tokens=60, seed=11, temperature=0.9, top_k=20, top_p=0.9, min_p=0.02, typical_p=0.95,
                repetition_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.2, no_repeat_ngram_size=4,
                bad_words=["xyz"], logit_bias={"3": -1.0})
    assert "".join(gen.stream("The", **opts)) == gen.generate("The", **opts).completion
    assert gen.generate("The", **opts) == gen.generate("The", **opts)


def test_batch_of_prompts_equals_one_by_one(gen):
    prompts = ["K", "QUEEN:\nThe king and", "LORD:"]
    batch = gen.generate(prompts, max_new_tokens=30, temperature=0)
    assert [b.text for b in batch] == [greedy(gen, p, 30).text for p in prompts]
    sampled = gen.generate(prompts, max_new_tokens=30, seed=4, num_return_sequences=2)
    assert len(sampled) == 6 and [s.prompt for s in sampled] == [p for p in prompts for _ in range(2)]
    assert sampled[0].completion != sampled[1].completion


def test_bans_bias_min_p_typical_p(gen):
    e = gen.tokenizer.token_to_id("e")
    assert "e" not in gen.generate("KING:", max_new_tokens=100, seed=1, bad_words=["e"]).completion
    assert set(gen.generate("KING:", max_new_tokens=20, seed=1, logit_bias={e: 100}).completion) == {"e"}
    assert gen.generate("KING:", max_new_tokens=40, seed=1, min_p=1.0) == greedy(gen)
    one = [gen.generate("KING:", max_new_tokens=40, seed=s, typical_p=1e-6).completion for s in (1, 2)]
    assert one[0] == one[1]  # a single typical token at each step: the seed no longer matters


def test_eos_min_new_tokens_logprobs_and_max_time(gen):
    nl = gen.tokenizer.token_to_id("\n")
    out = gen.generate("KING:", max_new_tokens=200, temperature=0, eos_token_id=nl, logprobs=True)
    assert out.finish_reason == "eos" and out.token_ids[-1] == nl and out.completion.endswith("\n")
    assert len(out.logprobs) == len(out.token_ids) and all(lp <= 0 for lp in out.logprobs)
    later = gen.generate("KING:", max_new_tokens=200, temperature=0, eos_token_id=nl, min_new_tokens=30)
    assert len(later.token_ids) > 30 and nl not in later.token_ids[:30]
    quick = gen.generate("KING:", max_new_tokens=10_000, max_time=0.05)
    assert quick.finish_reason == "length" and len(quick.token_ids) < 10_000


def test_state_continues_a_text(gen):
    first = greedy(gen, n=25)
    more = gen.generate("", state=first.state, max_new_tokens=25, temperature=0)
    assert first.completion + more.completion == greedy(gen, n=50).completion


def test_bad_options_name_the_option(gen):
    for opts, name in [({"num_beams": 0}, "num_beams"), ({"num_beams": 2, "num_return_sequences": 3},
                       "num_return_sequences"), ({"top_k": -1}, "top_k"), ({"max_new_tokens": -1}, "max_new_tokens"),
                       ({"min_p": 2}, "min_p"), ({"typical_p": 0}, "typical_p"), ({"stop": [""]}, "stop"),
                       ({"bad_words": ["ok", ""]}, "bad_words"), ({"top_p": True}, "top_p must be a number"),
                       ({"temperature": False}, "temperature must be a number")]:
        with pytest.raises(UserInputError, match=name):
            gen.generate("x", **opts)
    with pytest.raises(UserInputError, match="stream"):
        list(gen.stream("x", num_beams=2))
    for bad in (2.5, "3", True):  # whole numbers only: not a TypeError deep in the decoder
        with pytest.raises(UserInputError, match="max_new_tokens must be a whole number"):
            gen.generate("x", max_new_tokens=bad)
    assert len(gen.generate("x", max_new_tokens=3.0, temperature=0).token_ids) == 3
    for bad in (5, ["a", None], {"a"}, [1, "a"], [[1], [2, "x"]], [True, 2], [10**6]):
        with pytest.raises(UserInputError, match="prompt must be a string|prompt token ids must be in"):
            gen.generate(bad, max_new_tokens=2)
    assert gen.generate([], max_new_tokens=2) == []
    with pytest.raises(UserInputError, match="one prompt"):
        list(gen.stream(["a", "b"], max_new_tokens=2))
    for call in (lambda: gen.generate("a", state=123, max_new_tokens=2),
                 lambda: list(gen.stream("a", state="x", max_new_tokens=2))):
        with pytest.raises(UserInputError, match="state must be a result's .state"):
            call()
    with pytest.raises(UserInputError, match="score.. takes one text string"):
        gen.score(5)
    # asking for the alternatives implies the log-probabilities (rather than dropping them silently)
    r = gen.generate("x", max_new_tokens=3, top_logprobs=2)
    assert len(r.logprobs) == 3 and all(len(step) == 2 for step in r.top_logprobs)


def test_text_assembler_holds_back_a_possible_stop_string():
    tok = Tokenizer.train("char", ["abcdefgh END\n"])
    asm = TextAssembler(tok, None, stop=["END"])
    shown = [asm.push(t) for t in tok.encode("ab E")]
    assert "".join(shown) == "ab "  # "E" could begin "END": held back
    assert asm.push(tok.encode("N")[0]) == "" and asm.push(tok.encode("D")[0]) == ""
    assert asm.stopped and asm.text() == "ab " and asm.flush() == ""
    asm2 = TextAssembler(tok, None, stop=["END"])
    assert "".join(asm2.push(t) for t in tok.encode("ab Eh")) == "ab Eh"


def test_processors_compose_in_order():
    from lstmgen.generation import GenerationConfig, History, apply_processors

    cfg = GenerationConfig(repetition_penalty=2.0, presence_penalty=1.0, logit_bias={0: 5.0})
    h = History(4)
    h.add([[1]], cfg)
    h.append(torch.tensor([2]))
    out = apply_processors(torch.tensor([[1.0, 2.0, -2.0, 3.0]]), h)
    assert torch.allclose(out, torch.tensor([[6.0, 1.0, -5.0, 3.0]]))


def test_sample_quality_numbers():
    from lstmgen.generation.quality import distinct_n, repeat_rate, sample_quality

    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b", "c d"], 2) == 1.0
    assert repeat_rate(["x y z w x y z w"], 4) == pytest.approx(1 - 4 / 5)
    q = sample_quality(["the king is here", "the queen is there"])
    assert q["distinct_1"] == pytest.approx(6 / 8) and q["repeat_4gram_rate"] == 0.0 and q["samples"] == 2


def test_repetition_controls_improve_quality_numbers(gen):
    from lstmgen.generation.quality import sample_quality

    plain = [greedy(gen, "KING:", 300).completion]
    fixed = [greedy(gen, "KING:", 300, no_repeat_ngram_size=6, repetition_penalty=1.3).completion]
    assert sample_quality(fixed)["repeat_4gram_rate"] < sample_quality(plain)["repeat_4gram_rate"]


def test_a_row_with_every_token_banned_ends(gen):
    out = gen.generate("", max_new_tokens=500, no_repeat_ngram_size=1, seed=0)
    ids = out.token_ids
    assert len(ids) == len(set(ids)) < gen.tokenizer.vocab_size and out.finish_reason == "length"
    assert greedy(gen, "", 500, no_repeat_ngram_size=1).finish_reason == "length"
