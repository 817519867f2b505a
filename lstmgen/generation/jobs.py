"""A TextJob: one request's rows in a SamplingDecoder, and the text each row has produced; a BeamJob: one
request's beam search, stepped by its caller.

`generate()` and `stream()` run one job on a decoder of their own; the server runs many jobs on one
decoder per model (continuous batching). Either way a token goes from `SamplingDecoder.step()` to its
row's job, which turns it into text, ends the row at a stop string and hands out the pieces.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from ..models import LanguageModel
from ..tokenizers import Tokenizer
from .beam import lm_beams
from .config import GenerationConfig
from .engine import SamplingDecoder
from .prefill import DecoderState
from .processors import TokenRules
from .rows import Row
from .text import GeneratedText, TextAssembler


class TextJob:
    """The rows of one request.

    Args:
        decoder: the decoder the rows run in.
        tokenizer: turns their tokens into text.
        prompts: the prompt texts (one per row; repeat a prompt for several sequences).
        prompt_ids: their ids.
        cfg: the options of every row.
        rules: token sequences never to produce, DRY's breakers.
        states: per-row DecoderState to continue from.
    """

    def __init__(self, decoder: SamplingDecoder, tokenizer: Tokenizer, prompts: Sequence[str],
                 prompt_ids: Sequence[Sequence[int]], cfg: GenerationConfig, rules: TokenRules = TokenRules(),
                 states: Optional[Sequence[Optional[DecoderState]]] = None) -> None:
        self.decoder, self.prompts, self.cfg = decoder, list(prompts), cfg
        states = list(states) if states else [None] * len(prompts)
        self.prompt_tokens = sum(len(i) for i in prompt_ids)
        self.texts = [TextAssembler(tokenizer, ids[-1] if ids else (s.pending[-1] if s else None), cfg.stop)
                      for ids, s in zip(prompt_ids, states)]
        self.rows: List[Row] = decoder.add(prompt_ids, cfg, rules, states if any(states) else None, owner=self)

    def push(self, row: Row, token: Optional[int]) -> Tuple[int, str]:
        """Take `row`'s new token from a step (None: the row ended without one); return (row.slot, the text
        that is safe to show now). A row that ends here releases all it held back.

        Args:
            row: one of this job's rows.
            token: its next token.
        """
        asm = self.texts[row.slot]
        piece = ""
        end = not row.active
        if token is not None:
            check = len(row.out.token_ids) > self.cfg.min_new_tokens  # stop strings count from here
            piece = asm.push(token, final=end, check_stop=check)
            if asm.stopped:
                self.decoder.finish(row, "stop")
                end = True
        if end:
            piece += asm.flush()
        return row.slot, piece

    def cancel(self) -> None:
        """Drop every row still running (the client went away)."""
        for row in self.rows:
            self.decoder.cancel(row)

    @property
    def done(self) -> bool:
        return not any(r.active for r in self.rows)

    @property
    def completion_tokens(self) -> int:
        return sum(len(r.out.token_ids) for r in self.rows)

    def results(self) -> List[GeneratedText]:
        """Every row's result, in row order."""
        return [GeneratedText(p, t.text(), r.out.token_ids, r.out.finish_reason, r.out.logprobs, r.out.state,
                              top_logprobs=r.out.top_logprobs)
                for p, t, r in zip(self.prompts, self.texts, self.rows)]

    def push_many(self, row: Row, tokens: List[int]) -> Tuple[int, str]:
        """push() for the tokens a block gave `row` (no stop strings: blocks run only without them), in
        one decode call: at batch 1,024 decoding token by token held generate() to about 250k tokens/s
        on this project's CPU, a twentieth of what the decoder hands out."""
        asm = self.texts[row.slot]
        piece = asm.push_many(tokens, final=not row.active) if tokens else ""
        if not row.active:
            piece += asm.flush()
        return row.slot, piece

    def run(self):
        """Step the decoder until this job is done (the decoder holds no other rows); yield
        (slot, piece) for each non-empty piece."""
        blocks = not self.cfg.stop  # a stop string is found in the text token by token
        while not self.done:
            if blocks:
                pieces = (self.push_many(row, tokens) for row, tokens in self.decoder.advance())
            else:
                pieces = (self.push(row, tok) for row, tok in self.decoder.step())
            for slot, piece in pieces:
                if piece:
                    yield slot, piece


class BeamJob:
    """One request's beam search over the language model (generation/beam.py), stepped by whoever runs it
    (`generate()` to the end, the server's engine a step at a time between its batch steps).

    Args:
        model: the language model.
        tokenizer: turns the hypotheses into text.
        prompts: the prompt texts.
        prompt_ids: their ids.
        cfg: the options (num_beams > 1).
        rules: token sequences never to produce, DRY's breakers.
        states: per-prompt DecoderState to continue from.
    """

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, prompts: Sequence[str],
                 prompt_ids: Sequence[Sequence[int]], cfg: GenerationConfig, rules: TokenRules = TokenRules(),
                 states: Optional[Sequence[Optional[DecoderState]]] = None) -> None:
        self.tokenizer, self.prompts, self.cfg = tokenizer, list(prompts), cfg
        self.states = list(states) if states else [None] * len(prompts)
        self.prompt_ids = [list(i) for i in prompt_ids]
        self.prompt_tokens = sum(len(i) for i in prompt_ids)
        self.search = lm_beams(model, self.prompt_ids, cfg, rules, self.states if any(self.states) else None)

    @property
    def rows(self) -> int:
        """Rows its next step runs."""
        return self.search.rows

    @property
    def done(self) -> bool:
        return self.search.done

    def step(self) -> bool:
        """One step of every beam; False once the search is over."""
        return self.search.step()

    def cancel(self) -> None:
        """Stop here (the client went away): no more steps, no results wanted."""
        self.search.done = True

    def finish(self) -> None:
        """End at the next step (a deadline): its candidates become hypotheses, as at max_new_tokens."""
        self.search.finish()

    def results(self) -> List[GeneratedText]:
        """num_return_sequences results per prompt, best first, prompt by prompt; a hypothesis is cut at
        the first stop string (finish_reason "stop")."""
        out = []
        for prompt, ids, st, outs in zip(self.prompts, self.prompt_ids, self.states, self.search.results()):
            anchor = ids[-1] if ids else (st.pending[-1] if st else None)
            for o in outs:
                asm = TextAssembler(self.tokenizer, anchor, self.cfg.stop)
                for i, tok in enumerate(o.token_ids):
                    asm.push(tok, check_stop=i + 1 > self.cfg.min_new_tokens)
                    if asm.stopped:
                        o.finish_reason = "stop"
                        break
                out.append(GeneratedText(prompt, asm.text(), o.token_ids, o.finish_reason, o.logprobs, None,
                                         o.score))
        return out
