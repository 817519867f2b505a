"""Raw HTTP: malformed requests get a 4xx in the error shape and the server keeps serving; limits;
native task endpoints; health and metrics."""
import asyncio
import json
import time

import httpx
import pytest

GOOD = {"model": "tiny", "prompt": "KING:", "max_tokens": 5}


def post(server, body, path="/v1/completions", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=data, headers={"content-type": "application/json"}, timeout=30, **kw)


def assert_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err


BAD = [
    (b"{not json", None),
    (b"", None),
    (b"[1, 2]", None),
    ({"prompt": "x"}, "model"),
    ({**GOOD, "temperature": "hot"}, "temperature"),
    ({**GOOD, "n": "2"}, "n"),
    ({**GOOD, "prompt": 5}, "prompt"),
    ({**GOOD, "prompt": [1, "a"]}, "prompt"),
    ({**GOOD, "stream": "yes"}, "stream"),
    ({**GOOD, "stop": 3}, "stop"),
    ({**GOOD, "temperature": 2.5}, "temperature"),
    ({**GOOD, "temperature": -1}, "temperature"),
    ({**GOOD, "top_p": 0}, "top_p"),
    ({**GOOD, "n": 0}, "n"),
    ({**GOOD, "n": 100}, "n"),
    ({**GOOD, "max_tokens": -1}, "max_tokens"),
    ({**GOOD, "max_tokens": 10 ** 9}, "max_tokens"),
    ({**GOOD, "logprobs": 9}, "logprobs"),
    ({**GOOD, "presence_penalty": 3}, "presence_penalty"),
    ({**GOOD, "logit_bias": {"x": 1}}, "logit_bias"),
    ({**GOOD, "top_k": -1}, "top_k"),
    ({**GOOD, "typical_p": 0}, "typical_p"),
    ({**GOOD, "num_beams": 2, "n": 3}, "num_return_sequences"),
    ({**GOOD, "stop": [""]}, "stop"),
    ({**GOOD, "prompt": []}, "prompt"),
    ({**GOOD, "prompt": [99999]}, "prompt"),
    ({**GOOD, "prompt": "x" * 600}, "prompt"),
    ({**GOOD, "suffix": "end"}, "suffix"),
    ({**GOOD, "n": 3, "best_of": 2}, "best_of"),
    ({**GOOD, "best_of": 3, "stream": True}, "best_of"),
    ({**GOOD, "best_of": 3, "num_beams": 2}, "best_of"),
    ({**GOOD, "best_of": 100}, "best_of"),
    ({**GOOD, "frobnicate": 1}, "frobnicate"),
    ({**GOOD, "temperature": float("nan")}, None),
    ({**GOOD, "num_beams": 1_000_000}, "num_beams"),
    ({**GOOD, "num_beams": 16, "prompt": ["a", "b", "c", "d", "e"]}, "num_beams"),
    ({**GOOD, "logit_bias": {"0": 1e308}}, "logit_bias"),
    ({**GOOD, "logit_bias": {"0": -101}}, "logit_bias"),
    ({**GOOD, "logit_bias": {"99999": 1}}, "logit_bias"),
    ({**GOOD, "logit_bias": {"-1": 1}}, "logit_bias"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_malformed_requests_get_400_and_the_server_keeps_serving(server, body, param):
    if isinstance(body, dict) and body.get("temperature") != body.get("temperature"):
        body = json.dumps(body).encode()  # NaN is not JSON: Python writes it, a strict parser refuses it
    assert_error(post(server, body), 400, param)
    assert post(server, GOOD).status_code == 200


def test_unknown_model_paths_and_methods(server):
    assert_error(post(server, {**GOOD, "model": "nope"}), 404, "model")
    assert_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_error(httpx.get(server.url + "/v1/completions"), 405)
    assert_error(httpx.get(server.url + "/v1/models/nope"), 404)


def test_oversize_bodies_get_413(server):
    big = json.dumps({**GOOD, "prompt": "x" * 100_000})
    assert_error(post(server, big), 413)

    def chunks():  # no Content-Length: the limit is enforced on the bytes as they arrive
        for _ in range(100):
            yield b"x" * 1000

    r = httpx.post(server.url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)
    assert post(server, GOOD).status_code == 200


def test_native_task_endpoints(server):
    r = post(server, {"model": "sentiment", "input": ["a good film", "dull"]}, "/v1/classify")
    assert r.status_code == 200 and [d["label"] for d in r.json()["data"]] == ["positive", "negative"]
    r = post(server, {"model": "reverse", "input": "a b c"}, "/v1/translate")
    assert r.json()["data"][0]["translation"] == "c b a"
    r = post(server, {"model": "ner", "input": "Paris is big"}, "/v1/tag")
    assert r.json()["data"][0]["tags"] == ["O", "O", "O"]
    assert_error(post(server, {"model": "tiny", "input": "x"}, "/v1/classify"), 400, "model")
    assert_error(post(server, {"model": "nope", "input": "x"}, "/v1/tag"), 404, "model")
    assert_error(post(server, {"model": "sentiment", "input": []}, "/v1/classify"), 400, "input")
    assert_error(post(server, {"model": "sentiment", "input": 3}, "/v1/classify"), 400, "input")


def test_health_metrics_and_playground(server):
    post(server, GOOD)
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and "tiny" in h["models"]
    m = httpx.get(server.url + "/metrics").text
    for name in ("lstmgen_requests_total", "lstmgen_generated_tokens_total", "lstmgen_queue_depth",
                 "lstmgen_active_rows", "lstmgen_time_to_first_token_seconds_bucket", "lstmgen_request_seconds_sum"):
        assert name in m
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "lstmgen playground" in page.text


async def _stream_first_chunk(client, url, body, hold=False):
    """Read a stream's first event, then hang up (or, with hold, keep the stream open until cancelled)."""
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            return r.status_code, dict(r.headers), json.loads(await r.aread())
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                if hold:
                    await asyncio.sleep(3600)
                return 200, dict(r.headers), line


def test_full_queue_answers_429_with_retry_after(make_server):
    s = make_server(max_batch=1, max_queue=1, max_tokens=100_000)
    long = {"model": "tiny", "prompt": "KING:", "max_tokens": 100_000, "stream": True}

    async def main():
        async with httpx.AsyncClient(timeout=30) as c:
            first = asyncio.create_task(_stream_first_chunk(c, s.url + "/v1/completions", long, hold=True))  # runs
            await asyncio.sleep(0.3)
            second = asyncio.create_task(_stream_first_chunk(c, s.url + "/v1/completions", long, hold=True))  # waits
            await asyncio.sleep(0.3)
            third = await c.post(s.url + "/v1/completions", json=GOOD)  # no room
            first.cancel(), second.cancel()
            return third

    r = asyncio.run(main())
    assert_error(r, 429)
    assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"


def test_request_timeout_answers_503(make_server):
    s = make_server(request_timeout=0.2, max_tokens=100_000)
    r = post(s, {**GOOD, "max_tokens": 100_000})
    assert_error(r, 503)
    assert r.json()["error"]["code"] == "timeout" and "retry-after" in r.headers
    r = httpx.post(s.url + "/v1/completions", json={**GOOD, "max_tokens": 100_000, "stream": True}, timeout=30)
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["error"]["code"] == "timeout"
    _wait_idle(s)


def test_concurrency_limit_answers_503(make_server):
    s = make_server(max_concurrent_requests=1, max_tokens=100_000)
    long = {"model": "tiny", "prompt": "KING:", "max_tokens": 100_000, "stream": True}

    async def main():
        async with httpx.AsyncClient(timeout=30) as c:
            first = asyncio.create_task(_stream_first_chunk(c, s.url + "/v1/completions", long, hold=True))
            await asyncio.sleep(0.3)
            r = await c.post(s.url + "/v1/completions", json=GOOD)
            first.cancel()
            return r

    r = asyncio.run(main())
    assert_error(r, 503)
    assert r.headers["retry-after"] == "1"


def _wait_idle(s, timeout=10.0):
    deadline = time.monotonic() + timeout
    sched = s.schedulers["tiny"]
    while sched.active_rows or sched.running:
        assert time.monotonic() < deadline, "rows were not freed"
        time.sleep(0.05)


def test_a_client_that_disconnects_mid_stream_frees_its_rows(make_server):
    s = make_server(max_tokens=100_000)
    body = {"model": "tiny", "prompt": "KING:", "max_tokens": 100_000, "n": 3, "stream": True}

    async def main():
        async with httpx.AsyncClient(timeout=30) as c:
            for _ in range(5):
                status, _, _ = await _stream_first_chunk(c, s.url + "/v1/completions", body)  # then hang up
                assert status == 200

    asyncio.run(main())
    _wait_idle(s)
    assert post(s, GOOD).status_code == 200


def test_bfloat16_language_models_serve(tiny_model_dir):
    """`lstmgen serve --dtype bfloat16`: the language models load in bf16 and complete requests, greedy
    and streamed."""
    import torch

    from lstmgen.server import ServerConfig
    from lstmgen.server.run import load_models

    from .conftest import LiveServer

    models = load_models([str(tiny_model_dir)], bundled=True, dtype="bfloat16")
    assert {next(m.model.parameters()).dtype for m in models.values()} == {torch.bfloat16}
    s = LiveServer(models, ServerConfig(stream_interval=0.0))
    try:
        r = post(s, {"model": "tiny", "prompt": "KING:", "max_tokens": 20, "temperature": 0})
        assert r.status_code == 200, r.text
        greedy = models["tiny"].generate("KING:", max_new_tokens=20, temperature=0).completion
        assert r.json()["choices"][0]["text"] == greedy
        with httpx.stream("POST", s.url + "/v1/completions", timeout=30,
                          json={"model": "shakespeare-char", "prompt": "ROMEO:", "max_tokens": 30, "stream": True,
                                "seed": 1}) as resp:
            assert resp.status_code == 200 and "data: [DONE]" in resp.read().decode()
    finally:
        s.stop()


def test_nulls_mean_the_defaults(server):
    """OpenAI's API takes null for an option as its default: n 1, echo and stream false, max_tokens 16."""
    r = post(server, {**GOOD, "n": None, "echo": None, "stream": None, "max_tokens": None, "temperature": 0,
                      "logprobs": None, "stop": None, "seed": None})
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    assert r.json()["usage"]["completion_tokens"] == 16 and not choice["text"].startswith("KING:")


def test_top_k_above_the_vocabulary_keeps_every_token(server):
    r = post(server, {**GOOD, "top_k": 10 ** 20, "seed": 3})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == post(server, {**GOOD, "seed": 3}).json()["choices"][0]["text"]


def test_a_beam_request_does_not_stall_the_streams(make_server):
    """A beam search of many beams and tokens runs a step per batch step: a stream beside it keeps getting
    its tokens, and the beam request still completes. (Its beams count against max_batch, 64 here.)"""
    s = make_server(max_tokens=100_000, stream_interval=0.0, max_beams=32)
    beam = {"model": "tiny", "prompt": "KING:", "max_tokens": 400, "num_beams": 32, "temperature": 0}
    stream = {"model": "tiny", "prompt": "QUEEN:", "max_tokens": 60, "stream": True, "temperature": 0}

    async def main():
        async with httpx.AsyncClient(timeout=120) as c:
            slow = asyncio.create_task(c.post(s.url + "/v1/completions", json=beam))
            await asyncio.sleep(0.3)
            gaps, last = [], time.monotonic()
            async with c.stream("POST", s.url + "/v1/completions", json=stream) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        now = time.monotonic()
                        gaps.append(now - last)
                        last = now
            streamed_while_beam_ran = not slow.done()
            return await slow, gaps, streamed_while_beam_ran

    r, gaps, beside = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert len(gaps) >= 60 and beside  # the whole stream came while the beam search was still running


def test_the_request_timeout_ends_a_beam_search(make_server):
    s = make_server(request_timeout=0.5, max_tokens=100_000, max_beams=64)
    r = post(s, {"model": "tiny", "prompt": "KING:", "max_tokens": 100_000, "num_beams": 64, "temperature": 0})
    assert_error(r, 503)
    _wait_idle(s)


def test_a_non_streamed_request_stops_when_its_client_hangs_up(make_server):
    s = make_server(max_tokens=100_000)
    body = {"model": "tiny", "prompt": "KING:", "max_tokens": 100_000, "n": 4}

    async def main():
        async with httpx.AsyncClient(timeout=30) as c:
            task = asyncio.create_task(c.post(s.url + "/v1/completions", json=body))
            deadline = time.monotonic() + 10
            while not s.schedulers["tiny"].active_rows:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            task.cancel()  # the client goes away mid-request

    asyncio.run(main())
    _wait_idle(s, timeout=5.0)
    assert post(s, GOOD).status_code == 200
