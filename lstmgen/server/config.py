"""ServerConfig: every limit the server enforces, with defaults that keep one CPU box responsive."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import check_range
from ..serial import JSONConfig


@dataclass
class ServerConfig(JSONConfig):
    """Server settings (`lstmgen serve --help` names each as a flag).

    Args:
        host: the address to bind; 127.0.0.1 keeps the server private to this machine.
        port: the TCP port.
        max_batch: rows (sequences) of one model stepped together; more requests wait in the queue.
        max_queue: requests that may wait for a slot; past it the server answers 429 with Retry-After.
        max_concurrent_requests: HTTP requests being handled at once; past it, 503 with Retry-After.
        max_prompt_tokens: the longest prompt, in tokens (400 past it).
        max_tokens: the cap on max_tokens per request (400 past it).
        max_n: the most sequences one request may ask for per prompt (n, and best_of).
        max_beams: the most beams of a beam search request (num_beams); its prompts x beams count against
            max_batch like sampled rows.
        max_body_bytes: the largest request body (413 past it).
        request_timeout: seconds a request may take, waiting included (503 past it; a stream ends with an
            error event).
        stream_interval: a stream sends its new text at most this often, in seconds (the first token at
            once); 0 sends a chunk per token. Past a few dozen streams, a chunk per token per client costs
            more CPU than the LSTM step itself; 0.05 s is still smooth to the eye.
        inline_prefill: prompts of up to this many tokens join the running batch at once and are read by
            its shared step, a token per step, instead of stalling every stream for their own prefill.
        threads: torch's intra-op threads for the engine; 0 (auto): the engine measures its step with one
            thread and with all of them every few seconds and keeps the faster, since another process
            holding a core makes a team of threads wait for each other (threads.py).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_queue: int = 256
    max_concurrent_requests: int = 512
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048
    max_n: int = 16
    max_beams: int = 16
    max_body_bytes: int = 1 << 20
    request_timeout: float = 300.0
    stream_interval: float = 0.05
    inline_prefill: int = 16
    threads: int = 0

    def __post_init__(self) -> None:
        check_range("port", self.port, 0, 65535)
        for name in ("max_batch", "max_queue", "max_concurrent_requests", "max_prompt_tokens", "max_tokens",
                     "max_n", "max_beams", "max_body_bytes"):
            check_range(name, getattr(self, name), 1)
        check_range("request_timeout", self.request_timeout, 0.0, low_open=True)
        check_range("stream_interval", self.stream_interval, 0.0)
        check_range("inline_prefill", self.inline_prefill, 0)
        check_range("threads", self.threads, 0)
