"""/v1/chat/completions, driven by the official `openai` client (sync and async) and by raw HTTP, every
response and chunk validated strictly against the SDK's own types."""
import asyncio
import json

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lstmgen.chat import DEFAULT_STOP, render

MESSAGES = [{"role": "system", "content": "Speak plainly."}, {"role": "user", "content": "Who comes here?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def test_a_chat_answer_is_the_completion_of_the_rendered_conversation(client, served_models, server):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=60, seed=4, temperature=0.9)
    want = served_models["tiny"].generate(render(MESSAGES), max_new_tokens=60, seed=4, temperature=0.9,
                                          top_p=1.0, stop=DEFAULT_STOP)
    (choice,) = r.choices
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content == want.completion
    assert choice.finish_reason == ("stop" if want.finish_reason == "stop" else "length")
    assert "\nUser:" not in choice.message.content
    raw = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                     json={"model": "tiny", "messages": MESSAGES, "max_tokens": 20, "n": 2, "logprobs": True,
                           "top_logprobs": 2}).json()
    ChatCompletion.model_validate(raw, strict=True)
    for c in raw["choices"]:  # the logprobs' tokens spell the answer, each with its bytes and alternatives
        entries = c["logprobs"]["content"]
        assert "".join(e["token"] for e in entries) == c["message"]["content"]
        assert all(len(e["top_logprobs"]) == 2 and e["bytes"] == list(e["token"].encode()) for e in entries)


def test_a_streamed_chat_joins_to_the_same_answer(client, server):
    opts = dict(model="tiny", messages=MESSAGES, max_tokens=40, seed=2)
    whole = client.chat.completions.create(**opts).choices[0].message.content
    chunks = list(client.chat.completions.create(**opts, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    r = httpx.post(server.url + "/v1/chat/completions", json={**opts, "stream": True,
                                                               "stream_options": {"include_usage": True}}, timeout=60)
    for line in r.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            ChatCompletionChunk.model_validate(json.loads(line[6:]), strict=True)


def test_the_async_client_and_content_parts(server):
    async def main():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
            parts = [{"role": "user", "content": [{"type": "text", "text": "Who comes "}, {"type": "text",
                                                                                         "text": "here?"}]}]
            a = await c.chat.completions.create(model="tiny", messages=parts, max_tokens=15, seed=1)
            b = await c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Who comes here?"}],
                                                max_tokens=15, seed=1)
            return a, b

    a, b = asyncio.run(main())
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completions_validate_strictly_against_the_sdk_types(server):
    """Completions too. With echo, the prompt's tokens carry null where the SDK's types want numbers: the
    first token has no log-probability (as in OpenAI's own answers) and prompt tokens no alternatives; those
    nulls are the one documented departure, checked and then set aside."""
    for body in ({"model": "tiny", "prompt": "KING:", "max_tokens": 8, "logprobs": 2},
                 {"model": "tiny", "prompt": ["KING:", "QUEEN:"], "max_tokens": 8, "n": 2},
                 {"model": "tiny", "prompt": "KING:", "max_tokens": 8, "stop": ["e"], "logprobs": 1}):
        Completion.model_validate(httpx.post(server.url + "/v1/completions", json=body, timeout=60).json(),
                                  strict=True)
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"model": "tiny", "prompt": "KING:", "max_tokens": 8, "logprobs": 2, "echo": True}).json()
    lp = r["choices"][0]["logprobs"]
    n = len(lp["tokens"]) - 8  # the prompt's tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][:n] == [None] * n
    lp["token_logprobs"][0], lp["top_logprobs"][:n] = 0.0, [{}] * n
    Completion.model_validate(r, strict=True)


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"messages": MESSAGES, "prompt": "x"}, "prompt"),
    ({"messages": MESSAGES, "echo": True}, "echo"),
    ({"messages": "hi"}, "messages"),
    ({"messages": MESSAGES, "top_logprobs": 9}, "top_logprobs"),
    ({"messages": MESSAGES, "num_beams": 99}, "num_beams"),
])
def test_bad_chat_requests_get_400(server, body, param):
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", **body}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_an_unknown_route_names_the_endpoints(server):
    r = httpx.post(server.url + "/v1/chat/complete", json={})
    assert r.status_code == 404 and "/v1/chat/completions" in r.json()["error"]["message"]
