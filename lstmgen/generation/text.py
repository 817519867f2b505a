"""From token ids to text: incremental detokenization, stop strings across token boundaries, results."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..tokenizers import Tokenizer
from .prefill import DecoderState


class GeneratedText(str):
    """The generated text (prompt included, as `generate` returns it), which is also a result record.

    Attributes:
        text: the same string.
        prompt: the prompt.
        completion: the text after the prompt.
        token_ids: the generated token ids (including those of a stop string that ended the text).
        logprobs: log-probability of each generated token under the model (with logprobs=True).
        finish_reason: "stop" (a stop string), "eos" (end-of-sequence token) or "length".
        state: a DecoderState to continue from (sampling and greedy).
        top_logprobs: with top_logprobs=k, the k most likely tokens (id -> log-probability) at each step.
    """

    prompt: str
    completion: str
    token_ids: List[int]
    logprobs: Optional[List[float]]
    finish_reason: str
    state: Optional[DecoderState]

    def __new__(cls, prompt: str, completion: str, token_ids: List[int], finish_reason: str,
                logprobs: Optional[List[float]] = None, state: Optional[DecoderState] = None,
                score: Optional[float] = None, top_logprobs: Optional[list] = None) -> "GeneratedText":
        obj = super().__new__(cls, prompt + completion)
        obj.prompt, obj.completion, obj.token_ids = prompt, completion, token_ids
        obj.finish_reason, obj.logprobs, obj.state, obj.score = finish_reason, logprobs, state, score
        obj.top_logprobs = top_logprobs
        return obj

    @property
    def text(self) -> str:
        return str(self)


class TextAssembler:
    """Turns one row's growing token list into text pieces that are safe to show.

    A piece never ends inside a UTF-8 character (byte-level BPE may split one across tokens) and never
    shows text that could be the start of a stop string; when a stop string appears, the text ends just
    before it.

    Args:
        tokenizer: decodes ids.
        anchor: the prompt's last token id (word tokens need it to know whether to put a space first).
        stop: stop strings.
    """

    def __init__(self, tokenizer: Tokenizer, anchor: Optional[int], stop: Sequence[str] = ()) -> None:
        self.tok, self.stop = tokenizer, list(stop)
        self.prev = anchor if tokenizer.kind == "word" else None
        self.ids: List[int] = []
        self.stable, self.tail = "", []  # decoded text up to the last character boundary; ids after it
        self.sent = 0
        self.search_from = 0  # stop strings count only from here (min_new_tokens)
        self.stopped = False

    def _append(self, tokens: List[int]) -> None:
        """Decode incrementally, all of `tokens` in one call: a token's text depends at most on the token
        before it (word tokens: a space or not), or, for byte-level BPE, on the bytes of a character split
        across tokens, which wait in `tail` until the character is whole."""
        if self.tok.kind == "bpe":
            self.tail += tokens
            tail = self.tok.decode(self.tail)
            if not tail.endswith("\ufffd"):  # a character boundary: bytes so far are final
                self.stable, self.tail = self.stable + tail, []
                return
            for k in range(1, min(4, len(self.tail))):  # a character has at most 4 bytes: at most 3 waiting
                head = self.tok.decode(self.tail[:-k])
                if not head.endswith("\ufffd"):
                    self.stable, self.tail = self.stable + head, self.tail[-k:]
                    return
        elif self.prev is None:
            self.stable += self.tok.decode(tokens)
        else:
            self.stable += self.tok.decode([self.prev] + tokens)[len(self.tok.decode([self.prev])):]
        if self.tok.kind == "word":
            self.prev = tokens[-1]

    def text(self) -> str:
        """The whole completion so far (cut before a stop string once one has appeared)."""
        full = self.stable + (self.tok.decode(self.tail) if self.tail else "")
        hits = [i for i in (full.find(s, self.search_from) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return full[:min(hits)]
        return full

    def push(self, token: int, final: bool = False, check_stop: bool = True) -> str:
        """Add a token; return the new text that is safe to show now ("" if none).

        Args:
            token: the new id.
            final: the sequence ends here: release everything.
            check_stop: False while min_new_tokens is not reached (stop strings found so far don't count).
        """
        return self.push_many([token], final, check_stop)

    def push_many(self, tokens: List[int], final: bool = False, check_stop: bool = True) -> str:
        """push() for several tokens at once (a block's): one decode call, one piece.

        Args:
            tokens: the new ids (at least one).
            final: the sequence ends with them.
            check_stop: as in push().
        """
        self.ids += tokens
        self._append(tokens)
        if not self.stop and not self.tail:  # nothing held back: the piece is what was just decoded
            piece, self.sent = self.stable[self.sent:], len(self.stable)
            return piece
        if not check_stop:
            self.search_from = len(self.stable)
        return self._release(self.text(), final)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the sequence."""
        return self._release(self.text(), final=True)

    def _release(self, text: str, final: bool) -> str:
        end = len(text)
        if not final and not self.stopped:
            if self.tok.kind == "bpe":  # unfinished UTF-8 character: wait for its remaining bytes
                while end > self.sent and text[end - 1] == "\ufffd":
                    end -= 1
            end = min(end, len(text) - _stop_prefix_len(text, self.stop))
        if end <= self.sent:
            return ""
        piece, self.sent = text[self.sent:end], end
        return piece


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string (held back)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
