"""The OpenAI-compatible API, driven by the official `openai` client."""
import json

import openai
import pytest

PROMPT = "KING:"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tiny(served_models):
    return served_models["tiny"]


def local(tiny, prompt=PROMPT, **opts):
    """What the Python API gives with the OpenAI defaults the server applies."""
    opts = {"temperature": 1.0, "top_p": 1.0, **opts}
    return tiny.generate(prompt, **opts)


def test_models_are_listed(client):
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "shakespeare-char", "sentiment", "reverse", "ner"} <= ids
    assert client.models.retrieve("tiny").id == "tiny"


def test_completion_equals_the_python_api_with_the_same_seed(client, tiny):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, seed=7, temperature=0.9)
    want = local(tiny, max_new_tokens=30, seed=7, temperature=0.9)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "tiny"
    assert r.choices[0].text == want.completion
    assert r.choices[0].finish_reason == "length" and r.choices[0].index == 0
    assert r.usage.prompt_tokens == len(tiny.tokenizer.encode(PROMPT))
    assert r.usage.completion_tokens == 30 and r.usage.total_tokens == r.usage.prompt_tokens + 30


def test_streaming_joins_to_the_same_text(client):
    opts = dict(model="tiny", prompt=PROMPT, max_tokens=40, seed=3)
    whole = client.completions.create(**opts).choices[0].text
    chunks = list(client.completions.create(**opts, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 5 and "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 40 and not chunks[-1].choices


def test_n_and_a_list_of_prompts(client, tiny):
    r = client.completions.create(model="tiny", prompt=["KING:", "QUEEN:"], n=2, max_tokens=15, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    want = tiny.generate(["KING:", "QUEEN:"], num_return_sequences=2, max_new_tokens=15, seed=5,
                         temperature=1.0, top_p=1.0)
    assert [c.text for c in r.choices] == [w.completion for w in want]
    assert r.choices[0].text != r.choices[1].text  # two samples of one prompt differ
    assert r.usage.completion_tokens == 60


def test_best_of_returns_the_candidates_with_the_best_logprob_per_token(client, tiny):
    r = client.completions.create(model="tiny", prompt=["KING:", "QUEEN:"], n=2, best_of=4, max_tokens=12, seed=9)
    cands = tiny.generate(["KING:", "QUEEN:"], num_return_sequences=4, max_new_tokens=12, seed=9, temperature=1.0,
                          top_p=1.0, logprobs=True)
    mean = [sum(c.logprobs) / len(c.logprobs) for c in cands]
    for p in range(2):  # per prompt: the 2 of its 4 candidates with the highest mean, best first
        best = sorted(range(4 * p, 4 * p + 4), key=lambda i: -mean[i])[:2]
        assert [c.text for c in r.choices[2 * p:2 * p + 2]] == [cands[i].completion for i in best]
        assert mean[best[0]] > min(mean[4 * p:4 * p + 4])  # a real choice: not every candidate ties
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and r.choices[0].logprobs is None  # not asked for
    assert r.usage.completion_tokens == 8 * 12  # every candidate's tokens, as OpenAI counts them
    shown = client.completions.create(model="tiny", prompt="KING:", best_of=3, max_tokens=12, seed=9, logprobs=1,
                                      echo=True)
    lp = shown.choices[0].logprobs
    assert shown.choices[0].text.startswith("KING:") and len(lp.tokens) == len(lp.token_logprobs)


def test_stop_strings_cut_exactly(client):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=200, seed=1, stop=["\n", "the"])
    c = r.choices[0]
    assert c.finish_reason == "stop" and "\n" not in c.text and "the" not in c.text
    streamed = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=200, seed=1, stop=["\n", "the"],
                                         stream=True)
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == c.text


def test_logprobs_tokens_spell_the_text_a_stop_string_cut(client, server):
    """The logprobs' tokens spell exactly the returned text, also when a stop string ended it (stop text
    split across tokens included), streamed or not; with include_usage every chunk but the last has
    "usage": null (OpenAI's shape)."""
    import httpx

    for stop in (["\n"], ["the"], ["a "], ["he"]):
        opts = dict(model="tiny", prompt=PROMPT, max_tokens=200, seed=1, stop=stop, logprobs=1)
        c = client.completions.create(**opts).choices[0]
        assert c.finish_reason == "stop" and "".join(c.logprobs.tokens) == c.text, (stop, c.text)
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) == len(c.logprobs.text_offset)
        r = httpx.post(server.url + "/v1/completions", timeout=60,
                       json={**opts, "stream": True, "stream_options": {"include_usage": True}})
        chunks = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        assert all("usage" in ch and ch["usage"] is None for ch in chunks[:-1]) and chunks[-1]["usage"]
        text = "".join(ch["choices"][0]["text"] for ch in chunks[:-1])
        tokens = [t for ch in chunks[:-1] if ch["choices"][0]["logprobs"]
                  for t in ch["choices"][0]["logprobs"]["tokens"]]
        assert text == c.text and "".join(tokens) == c.text, (stop, text)


def test_seed_gives_the_same_text_and_other_seeds_differ(client):
    texts = [client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, seed=s).choices[0].text
             for s in (11, 11, 12)]
    assert texts[0] == texts[1] != texts[2]


def test_echo_and_logprobs(client, tiny):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, echo=True, logprobs=2, seed=0)
    c = r.choices[0]
    assert c.text.startswith(PROMPT)
    n_prompt = len(tiny.tokenizer.encode(PROMPT))
    lp = c.logprobs
    assert len(lp.tokens) == n_prompt + 5 and lp.token_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == c.text and lp.text_offset[n_prompt] == len(PROMPT)
    assert all(len(t) == 2 for t in lp.top_logprobs[n_prompt:])


def test_penalties_and_extra_options(client, tiny):
    greedy = tiny.generate(PROMPT, max_new_tokens=30, temperature=0).completion
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, extra_body={"top_k": 1})
    assert r.choices[0].text == greedy  # top_k=1 is greedy
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0,
                                  extra_body={"no_repeat_ngram_size": 2})
    toks = tiny.tokenizer.encode(PROMPT + r.choices[0].text)
    pairs = list(zip(toks, toks[1:]))
    assert len(pairs) == len(set(pairs))
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, presence_penalty=2.0,
                                  frequency_penalty=2.0, logit_bias={"0": -100}, seed=2)
    assert r.choices[0].finish_reason == "length"
    dry = {"dry_multiplier": 0.8, "dry_allowed_length": 3, "dry_sequence_breakers": ["\n"]}  # llama.cpp's names
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=80, temperature=0, extra_body=dry)
    assert r.choices[0].text == tiny.generate(PROMPT, max_new_tokens=80, temperature=0, **dry).completion
    assert r.choices[0].text != tiny.generate(PROMPT, max_new_tokens=80, temperature=0).completion


def test_beam_search_as_an_extra_option(client, tiny):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, n=2, extra_body={"num_beams": 3})
    want = tiny.generate(PROMPT, max_new_tokens=12, num_beams=3, num_return_sequences=2, temperature=1.0, top_p=1.0)
    assert [c.text for c in r.choices] == [w.completion for w in want]


def test_client_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", n=2, extra_body={"num_beams": 3}, stream=True)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="sentiment", prompt="x")
    assert "language model" in e.value.body["message"]


def test_token_id_prompts(client, tiny):
    ids = tiny.tokenizer.encode(PROMPT)
    a = client.completions.create(model="tiny", prompt=ids, max_tokens=10, seed=4).choices[0].text
    b = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, seed=4).choices[0].text
    assert a == b
    # several lists, echo with logprobs, streaming and beam search all take the ids as given
    two = [ids, tiny.tokenizer.encode("QUEEN")]
    r = client.completions.create(model="tiny", prompt=two, max_tokens=5, seed=4, echo=True, logprobs=1)
    assert r.usage.prompt_tokens == len(ids) + len(two[1]) and r.choices[0].text.startswith(PROMPT + b[:5])
    assert r.choices[1].logprobs.tokens[:len(two[1])] == list("QUEEN")
    stream = client.completions.create(model="tiny", prompt=ids, max_tokens=10, seed=4, stream=True)
    assert "".join(c.choices[0].text for c in stream) == b
    beam = client.completions.create(model="tiny", prompt=ids, max_tokens=6, extra_body={"num_beams": 2})
    assert beam.choices[0].text == tiny.generate(PROMPT, max_new_tokens=6, num_beams=2).completion
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=[ids, [10**6]], max_tokens=2)
    assert e.value.body["param"] == "prompt" and "token ids" in e.value.body["message"]
