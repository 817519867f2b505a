"""One /v1/completions request: from its prompts to the response body, or to the stream's chunks, in
the shapes of the OpenAI completions API (choices, logprobs, usage)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..errors import UserInputError
from ..generation import GeneratedText, TextJob
from .config import ServerConfig
from .schema import (
    CompletionRequest,
    completion_body,
    completion_id,
    finish_reason,
    sse,
    usage,
)


class ParamError(ValueError):
    """A request value outside the server's limits; `param` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class CompletionRun:
    """The prompts, options and output bookkeeping of one completion request.

    Args:
        body: the validated request.
        pipeline: the TextGenerator named by body.model.
        config: the server's limits.
    """

    def __init__(self, body: CompletionRequest, pipeline, config: ServerConfig) -> None:
        self.body, self.pipeline, self.config = body, pipeline, config
        self.id = completion_id()
        self.sent: Dict[int, int] = {}  # per choice: tokens whose logprobs went out in a chunk
        self.offset: Dict[int, int] = {}  # per choice: characters sent (text_offset)
        self.chars: Dict[int, int] = {}  # per choice: characters of the completion sent
        self.spelled: Dict[int, int] = {}  # per choice: characters the tokens sent so far spell

    def prepare(self) -> None:
        """Check the request against the limits and the model; UserInputError / ParamError if it fails."""
        b, c, tok = self.body, self.config, self.pipeline.tokenizer
        if isinstance(b.prompt, list) and not b.prompt:
            raise ParamError("prompt must not be an empty list", "prompt")
        try:  # token ids (one list, or a list of lists) are used as given, their text decoded from them
            prompts, self.given_ids, _ = self.pipeline._prompts(b.prompt)
        except UserInputError as e:
            raise ParamError(str(e), "prompt") from None
        if b.n > c.max_n:
            raise ParamError(f"n must be <= {c.max_n} on this server, got {b.n}", "n")
        if b.max_tokens is not None and b.max_tokens > c.max_tokens:
            raise ParamError(f"max_tokens must be <= {c.max_tokens} on this server, got {b.max_tokens}", "max_tokens")
        self.per_prompt = self._check_best_of()
        beams = b.num_beams or 1
        if beams > c.max_beams:
            raise ParamError(f"num_beams must be <= {c.max_beams} on this server, got {beams}", "num_beams")
        if len(prompts) * max(self.per_prompt, beams) > c.max_batch:
            name = "num_beams" if beams > self.per_prompt else "best_of" if self.per_prompt > b.n else "n"
            value = max(self.per_prompt, beams)
            raise ParamError(f"{len(prompts)} prompts x {name}={value} is more than the {c.max_batch} "
                             "sequences this server generates at once", name)
        self._check_logit_bias()
        if b.suffix:
            raise ParamError("suffix (insertion) is not supported: an LSTM language model reads left to right",
                             "suffix")
        self.prompt_ids = self.given_ids or [tok.encode(p) for p in prompts]
        longest = max(len(i) for i in self.prompt_ids)
        if longest > c.max_prompt_tokens:
            raise ParamError(f"the prompt has {longest} tokens; this server takes at most {c.max_prompt_tokens}",
                             "prompt")
        self.prompts = prompts
        self.options = b.generation_options()
        if (b.num_beams or 1) > 1:
            self.options["num_return_sequences"] = b.n
        if self.per_prompt > b.n:
            self.options["logprobs"] = True  # they rank the candidates; the response shows them only if asked
        self.cfg, _ = self.pipeline._setup(self.options)  # raises UserInputError naming a bad option
        self.rows = [p for p in prompts for _ in range(self.per_prompt)]
        self.row_ids = [ids for ids in self.given_ids for _ in range(self.per_prompt)] if self.given_ids else None
        self.prompt_tokens = sum(len(i) for i in self.prompt_ids)
        self.prompt_scores: Optional[list] = None  # with echo and logprobs: set from score_prompts()

    def _check_logit_bias(self) -> None:
        """OpenAI's rule: biases in [-100, 100], for token ids the model has."""
        V = self.pipeline.tokenizer.vocab_size
        for key, value in (self.body.logit_bias or {}).items():
            try:
                token = int(key)
            except ValueError:
                raise ParamError(f"logit_bias keys are token ids, got {key!r}", "logit_bias") from None
            if not 0 <= token < V:
                raise ParamError(f"logit_bias: token id {token} is not in the vocabulary (0 to {V - 1})",
                                 "logit_bias")
            if not -100 <= value <= 100:
                raise ParamError(f"logit_bias values must be in [-100, 100], got {value!r} for token {token}",
                                 "logit_bias")

    def _check_best_of(self) -> int:
        """Sequences to generate per prompt: best_of (OpenAI: candidates made on the server, of which the n
        with the highest log-probability per token are returned), else n."""
        b = self.body
        if b.best_of is None or b.best_of == b.n:
            return b.n
        if b.best_of < b.n:
            raise ParamError(f"best_of ({b.best_of}) must be >= n ({b.n})", "best_of")
        if b.best_of > self.config.max_n:
            raise ParamError(f"best_of must be <= {self.config.max_n} on this server, got {b.best_of}", "best_of")
        if b.stream:
            raise ParamError("best_of > n cannot stream: the best candidates are known only when all are done",
                             "best_of")
        if (b.num_beams or 1) > 1:
            raise ParamError("best_of > n does not combine with num_beams: beam search already returns its n best",
                             "best_of")
        return b.best_of

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.body.echo and self.body.logprobs is not None

    def score_prompts(self) -> list:
        """(ids, logprobs) of each prompt (torch work: the server runs it on its engine thread)."""
        return [self.pipeline.score(p) for p in (self.given_ids or self.prompts)]

    # -- logprobs --------------------------------------------------------------------------------------
    def _logprobs(self, ids: List[int], lps: List[Optional[float]], tops: Optional[list], start: int,
                  texts: Optional[List[str]] = None) -> dict:
        """OpenAI's logprobs object for tokens `ids` whose text starts at character `start` (`texts`: the
        tokens' texts, when not each one's own decoding)."""
        dec = self.pipeline.tokenizer.decode
        tokens = texts if texts is not None else [dec([i]) for i in ids]
        offsets, pos = [], start
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        top = None
        if self.body.logprobs:
            top = [None if t is None else {dec([i]): v for i, v in t.items()} for t in (tops or [None] * len(ids))]
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets}

    def _spelling(self, ids: List[int], chars: int) -> List[str]:
        """The texts of the first tokens of `ids` that spell `chars` characters, the last one cut there: so
        that the logprobs' tokens spell exactly the text returned when a stop string cut it short."""
        out, pos = [], 0
        for i in ids:
            if pos >= chars:
                break
            t = self.pipeline.tokenizer.decode([i])[:chars - pos]
            out.append(t)
            pos += len(t)
        return out

    def _prompt_logprobs(self, p: int) -> dict:
        """The logprobs object of prompt p (with echo)."""
        ids, lps = self.prompt_scores[p]
        return self._logprobs(ids, lps, [None] * len(ids), 0)

    @staticmethod
    def _merge(a: Optional[dict], b: dict) -> dict:
        return b if a is None else {k: (a[k] or []) + (b[k] or []) if a[k] is not None or b[k] is not None
                                    else None for k in a}

    # -- whole responses -------------------------------------------------------------------------------
    def response(self, results: Optional[List[GeneratedText]] = None, job: Optional[TextJob] = None) -> dict:
        """The response body for finished results (a job's, or beam search's)."""
        results = results if results is not None else job.results()
        done = sum(len(r.token_ids) for r in results)  # every candidate's tokens count, as OpenAI bills best_of
        choices = []
        for i, (p, r) in enumerate(self._best(results)):
            prefix = self.prompts[p] if self.body.echo else ""
            lp = None
            if self.body.logprobs is not None:
                texts = self._spelling(r.token_ids, len(r.completion))
                n = len(texts)
                lp = self._logprobs(r.token_ids[:n], (r.logprobs or [])[:n],
                                    r.top_logprobs[:n] if r.top_logprobs else None, len(prefix), texts)
                if self.prompt_scores is not None:
                    lp = self._merge(self._prompt_logprobs(p), lp)
            choices.append({"text": prefix + r.completion, "index": i, "logprobs": lp,
                            "finish_reason": finish_reason(r.finish_reason)})
        return completion_body(self.id, self.body.model, choices, usage(self.prompt_tokens, done))

    def _best(self, results: List[GeneratedText]) -> List[Tuple[int, GeneratedText]]:
        """(prompt index, result) of the choices to return: per prompt its n results, or with best_of the n
        candidates of highest mean log-probability per token, best first (an empty one ranks last)."""
        k, n = len(results) // len(self.prompts), self.body.n
        out = []
        for p in range(len(self.prompts)):
            group = results[p * k:(p + 1) * k]
            if k > n:  # sorted() is stable: ties keep the order they were made in
                group = sorted(group, key=lambda r: -sum(r.logprobs) / len(r.logprobs) if r.logprobs
                               else float("inf"))[:n]
            out += [(p, r) for r in group]
        return out

    @property
    def beam(self) -> bool:
        """Beam search (num_beams > 1): the engine steps it between the batch's steps."""
        return self.cfg.num_beams > 1

    # -- streaming -------------------------------------------------------------------------------------
    def _chunk(self, i: int, text: str, logprobs: Optional[dict] = None, reason: Optional[str] = None) -> str:
        body = completion_body(self.id, self.body.model, [
            {"text": text, "index": i, "logprobs": logprobs, "finish_reason": reason}], None)
        if self.body.stream_options and self.body.stream_options.include_usage:
            body["usage"] = None  # OpenAI: with include_usage, every chunk but the last has "usage": null
        return sse(body)

    def stream_start(self) -> List[str]:
        """With echo, each choice's first chunk is its prompt."""
        if not self.body.echo:
            return []
        out = []
        for i, p in enumerate(self.rows):
            lp = self._prompt_logprobs(i // self.per_prompt) if self.prompt_scores is not None else None
            out.append(self._chunk(i, p, lp))
            self.offset[i] = len(p)
        return out

    def _new_logprobs(self, job: TextJob, i: int, chars: int) -> Optional[dict]:
        """Choice i's tokens not yet sent that spell its text up to `chars` characters of the completion
        (a token whose text is held back, as a possible stop string, waits for it)."""
        if self.body.logprobs is None:
            return None
        o = job.rows[i].out
        start, done = self.sent.get(i, 0), self.spelled.get(i, 0)
        texts = self._spelling(o.token_ids[start:], chars - done)
        end = start + len(texts)
        self.sent[i], self.spelled[i] = end, done + sum(len(t) for t in texts)
        tops = o.top_logprobs[start:end] if o.top_logprobs else None
        return self._logprobs(o.token_ids[start:end], o.logprobs[start:end], tops, self.offset.get(i, 0), texts)

    def stream_pieces(self, job: TextJob, pieces: list) -> List[str]:
        """Chunks for one step's pieces [(choice, text, made_a_token)], one chunk per choice with text."""
        text: Dict[int, str] = {}
        for i, piece, _ in pieces:
            text[i] = text.get(i, "") + piece
        out = []
        for i, t in text.items():
            if t:
                self.chars[i] = self.chars.get(i, 0) + len(t)
                out.append(self._chunk(i, t, self._new_logprobs(job, i, self.chars[i])))
                self.offset[i] = self.offset.get(i, 0) + len(t)
        return out

    def stream_end(self, job: TextJob) -> List[str]:
        """Each choice's last chunk (finish_reason), then usage if stream_options.include_usage."""
        out = [self._chunk(i, "", self._new_logprobs(job, i, self.chars.get(i, 0)),
                           finish_reason(r.out.finish_reason)) for i, r in enumerate(job.rows)]
        if self.body.stream_options and self.body.stream_options.include_usage:
            out.append(self._usage_chunk(usage(self.prompt_tokens, job.completion_tokens)))
        return out

    def _usage_chunk(self, use: dict) -> str:
        """The last chunk of a stream with include_usage: no choices, the usage."""
        return sse(completion_body(self.id, self.body.model, [], use))
