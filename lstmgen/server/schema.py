"""Request bodies (validated strictly: a wrong type is a 400, never a coercion) and response shapes of
the OpenAI completions API, plus the native task endpoints."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

PromptType = Union[str, List[str], List[int], List[List[int]]]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(Strict):
    include_usage: bool = False


class CompletionRequest(Strict):
    """POST /v1/completions. OpenAI's fields with its defaults, then lstmgen's extra options. A field sent
    as null takes its default, as in OpenAI's API (`"n": null` is n = 1, `"max_tokens": null` 16)."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    model: str
    prompt: PromptType = ""
    max_tokens: Optional[int] = Field(16, ge=0)
    temperature: Optional[float] = Field(1.0, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    echo: bool = False
    stop: Optional[Union[str, List[str]]] = None
    presence_penalty: Optional[float] = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: Optional[Dict[str, float]] = None
    seed: Optional[int] = None
    user: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1)
    suffix: Optional[str] = None
    # lstmgen's options beyond the OpenAI API (send them with the client's extra_body)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    typical_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0)
    no_repeat_ngram_size: Optional[int] = Field(None, ge=0)
    dry_multiplier: Optional[float] = Field(None, ge=0.0)  # llama.cpp's server names DRY's options these
    dry_base: Optional[float] = Field(None, gt=1.0)
    dry_allowed_length: Optional[int] = Field(None, ge=1)
    dry_penalty_last_n: Optional[int] = Field(None, ge=0)
    dry_sequence_breakers: Optional[List[str]] = None
    num_beams: Optional[int] = Field(None, ge=1)
    length_penalty: Optional[float] = None
    early_stopping: Optional[Union[bool, Literal["never"]]] = None  # transformers' meanings (GenerationConfig)
    min_tokens: Optional[int] = Field(None, ge=0)
    bad_words: Optional[List[str]] = None

    def generation_options(self) -> dict:
        """GenerationConfig fields (None: the model's default)."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return {k: v for k, v in dict(
            max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
            presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias, seed=self.seed, stop=stop, top_k=self.top_k, min_p=self.min_p,
            typical_p=self.typical_p, repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size, num_beams=self.num_beams,
            dry_multiplier=self.dry_multiplier, dry_base=self.dry_base, dry_allowed_length=self.dry_allowed_length,
            dry_penalty_last_n=self.dry_penalty_last_n, dry_sequence_breakers=self.dry_sequence_breakers,
            length_penalty=self.length_penalty, early_stopping=self.early_stopping, min_new_tokens=self.min_tokens,
            bad_words=self.bad_words,
            logprobs=self.logprobs is not None or None, top_logprobs=self.logprobs or None,
        ).items() if v is not None}


class ChatMessage(BaseModel):
    """One message of a conversation; OpenAI's other fields (name, tool calls) are accepted and not read."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: Optional[Union[str, List[Dict[str, Any]]]] = None


class ChatCompletionRequest(CompletionRequest):
    """POST /v1/chat/completions: OpenAI's chat fields, then the same extra options as completions. The
    conversation is rendered into one prompt by the model's chat template (lstmgen/chat.py)."""

    prompt: PromptType = ""  # not a chat field: rendered from messages
    messages: List[ChatMessage]
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: Optional[bool] = None  # type: ignore[assignment]  # chat: a flag, with top_logprobs
    top_logprobs: Optional[int] = Field(None, ge=0, le=5)
    response_format: Optional[Dict[str, Any]] = None
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[str, Dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    metadata: Optional[Dict[str, Any]] = None
    store: Optional[bool] = None
    modalities: Optional[List[str]] = None
    service_tier: Optional[str] = None

    def completion_logprobs(self) -> Optional[int]:
        """The completions API's logprobs (how many alternatives per token; None: none)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class TextsRequest(Strict):
    """POST /v1/translate, /v1/classify, /v1/tag: one text or a list, and the task's options."""

    model: str
    input: Union[str, List[str]]
    options: Dict[str, Union[int, float, str, bool, None]] = Field(default_factory=dict)


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def completion_body(cid: str, model: str, choices: List[dict], usage: Optional[dict]) -> dict:
    body = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "system_fingerprint": None}
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: Optional[str]) -> Optional[str]:
    """OpenAI knows stop and length: an end-of-sequence token is a stop."""
    return "stop" if reason == "eos" else reason


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(obj) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
