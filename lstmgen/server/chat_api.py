"""One /v1/chat/completions request: the conversation rendered into a prompt by the model's chat template
(lstmgen/chat.py), generated as a completion (openai_api.CompletionRun), answered in the chat shapes
(chat.completion, chat.completion.chunk with deltas, logprobs as content entries)."""
from __future__ import annotations

from typing import List, Optional

from ..generation import GeneratedText, TextJob
from .config import ServerConfig
from .openai_api import CompletionRun, ParamError
from .schema import ChatCompletionRequest, CompletionRequest, sse

NOT_CHAT = ("prompt", "echo", "suffix", "best_of")  # completions fields a chat request may not carry


def as_completion(body: ChatCompletionRequest, prompt: str, stops: List[str],
                  config: ServerConfig) -> CompletionRequest:
    """The completions request that generates the answer: the rendered prompt, the template's stop strings
    after the client's, OpenAI's chat default of no length limit (the server's max_tokens here)."""
    for name in NOT_CHAT:
        if name in body.model_fields_set:
            raise ParamError(f"{name} is a completions field; /v1/chat/completions takes messages", name)
    fields = {k: getattr(body, k) for k in CompletionRequest.model_fields if k in body.model_fields_set}
    own = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else \
        body.max_tokens if "max_tokens" in body.model_fields_set else config.max_tokens
    fields.update(prompt=prompt, stop=own + [s for s in stops if s not in own] or None, max_tokens=max_tokens,
                  logprobs=body.completion_logprobs())
    return CompletionRequest.model_construct(**fields)  # fields checked by the chat schema already


class ChatRun(CompletionRun):
    """A chat request run as a completion; only the shapes of what goes back differ."""

    def __init__(self, body: ChatCompletionRequest, pipeline, config: ServerConfig) -> None:
        try:
            prompt, stops = pipeline.chat_prompt([m.model_dump() for m in body.messages])
        except ValueError as e:
            raise ParamError(str(e), "messages") from None
        super().__init__(as_completion(body, prompt, stops, config), pipeline, config)
        self.id = "chatcmpl-" + self.id[len("cmpl-"):]

    def _body(self, choices: list, obj: str, use: Optional[dict]) -> dict:
        from time import time

        body = {"id": self.id, "object": obj, "created": int(time()), "model": self.body.model, "choices": choices,
                "system_fingerprint": None, "service_tier": None}
        if use is not None or (obj.endswith("chunk") and self._include_usage):
            body["usage"] = use
        return body

    @property
    def _include_usage(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    def _chat_logprobs(self, lp: Optional[dict]) -> Optional[dict]:
        """The completions logprobs object as chat's: one entry per token, with its bytes and alternatives."""
        if lp is None:
            return None
        tops = lp["top_logprobs"] or [None] * len(lp["tokens"])
        entry = lambda t, v: {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}  # noqa: E731
        return {"content": [{**entry(t, v), "top_logprobs": [entry(a, b) for a, b in (top or {}).items()]}
                            for t, v, top in zip(lp["tokens"], lp["token_logprobs"], tops)], "refusal": None}

    def response(self, results: Optional[List[GeneratedText]] = None, job: Optional[TextJob] = None) -> dict:
        body = super().response(results, job)
        choices = [{"index": c["index"], "message": {"role": "assistant", "content": c["text"], "refusal": None,
                                                      "annotations": []},
                    "logprobs": self._chat_logprobs(c["logprobs"]), "finish_reason": c["finish_reason"]}
                   for c in body["choices"]]
        return self._body(choices, "chat.completion", body["usage"])

    def _chunk(self, i: int, text: str, logprobs: Optional[dict] = None, reason: Optional[str] = None) -> str:
        delta = {"content": text} if text or reason is None else {}
        choice = {"index": i, "delta": delta, "logprobs": self._chat_logprobs(logprobs), "finish_reason": reason}
        return sse(self._body([choice], "chat.completion.chunk", None))

    def stream_start(self) -> List[str]:
        """Each choice's first chunk names the assistant's role, as OpenAI's streams do."""
        return [sse(self._body([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}], "chat.completion.chunk", None))
                for i in range(len(self.rows))]

    def _usage_chunk(self, use: dict) -> str:
        return sse(self._body([], "chat.completion.chunk", use))
