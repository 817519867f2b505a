"""The decoding engine: batched sampling and greedy decoding over token ids (beam search: beam.py).

Every prompt goes through the LSTM once (prefill); after that each new token costs one LSTM step with
(h, c) carried, and a chosen token is fed to the LSTM only when the next one is asked for, so the last
token of a sequence is never run. Text, stop strings and streaming live one layer up (pipelines), which
calls `SamplingDecoder.step()` or `advance()` and tells it when a row is done.
"""
from __future__ import annotations

import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..models import LanguageModel
from .blocks import Block, BlockCache, block_size
from .config import GenerationConfig
from .prefill import DecoderState, LSTMState, SequenceOutput, prefill
from .processors import History, TokenRules, apply_processors, sample, warp
from .rows import Ahead, BlockRun, Row, RowArrays
from .uniforms import uniforms

__all__ = ["DecoderState", "LSTMState", "Row", "SamplingDecoder", "SequenceOutput", "prefill"]


class SamplingDecoder:
    """Sampling or greedy decoding of a batch whose rows join and leave between steps.

    Every step feeds each row's previous token through one batched LSTM step and chooses each row's next
    token under that row's own options (per-row tensors, see processors.History). Rows added between
    steps are prefilled and join the next step; finished rows leave it. This is what the server's
    continuous batching runs, and what `generate()` runs with one request.

    A prompt of at most `inline_prefill` tokens is not prefilled on its own: the row joins at once and its
    tokens go through the shared batched step one per step (its sampled tokens are ignored until the
    prompt is in), as in chunked prefill (Agrawal et al. 2023, Sarathi). A running batch then never stalls
    for a newcomer's prefill, which for short prompts costs more than the steps it saves.

    `advance()` runs several steps at once where the rows allow it (blocks.py): on a GPU as one CUDA graph
    replay, with the same tokens as step by step.

    Args:
        model: the language model.
        inline_prefill: the longest prompt fed through the shared step (0: every prompt is prefilled).
        block_steps: the most steps `advance()` runs as one block (0 or 1: one step at a time); by default
            32 on a GPU (captured as CUDA graphs) and 8 on a CPU, where a block saves the per-step host work
            (one vectorised uniforms call, no per-row bookkeeping between its steps): 4-10% more tokens/s
            than single steps at batch 1 and 64 on a 3 x 512 model, while a stream still gets its text
            every few milliseconds.
        graphs: capture blocks as CUDA graphs (default: on a GPU); False runs them eagerly.
        blocks: a BlockCache to take captured blocks from and keep new ones in (default: the decoder's own).
        pipeline: the most blocks one `advance()` call runs back to back, each queued before the host
            reads the one before it.
        ahead: queue the next block before `advance()` reads its last one and returns (default: on a GPU,
            where blocks run while the host works), so that the GPU also works while the caller handles
            the tokens and calls again. A block queued for nothing (the caller adds rows or steps, asks for
            fewer steps, or every row ended) is dropped, and its rows' random numbers are given back.
    """

    def __init__(self, model: LanguageModel, inline_prefill: int = 0, block_steps: Optional[int] = None,
                 graphs: Optional[bool] = None, blocks: Optional[BlockCache] = None, pipeline: int = 4,
                 ahead: Optional[bool] = None) -> None:
        model.eval()
        self.model, self.inline_prefill = model, inline_prefill
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # a bfloat16 model keeps its state in bfloat16 too
        cuda = self.device.type == "cuda"
        self.block_steps = (32 if cuda else 8) if block_steps is None else block_steps
        self._blocks = blocks if blocks is not None else BlockCache(cuda if graphs is None else graphs)
        self.pipeline = max(1, pipeline)
        self.ahead = cuda if ahead is None else ahead
        self._ahead: Optional[Ahead] = None  # the block queued at the end of the last advance()
        self.rows: List[Row] = []
        self.history: Optional[History] = None  # made at the first add, when the vocabulary size is known
        self.logits: Optional[Tensor] = None  # (B, V) next-token logits of every row
        self.state: Optional[LSTMState] = None
        self.pending = torch.zeros(0, dtype=torch.long, device=self.device)  # chosen, not yet fed
        self.has_pending: List[bool] = []
        self.arrays = RowArrays()  # per-row facts as arrays (rows.py): random streams, lengths, ends

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def add(self, prompts: Sequence[Sequence[int]], cfg: GenerationConfig, rules: TokenRules = TokenRules(),
            states: Optional[Sequence[Optional[DecoderState]]] = None, owner: object = None) -> List[Row]:
        """Prefill new rows; they take part from the next step on.

        Args:
            prompts: prompt ids per row.
            cfg: the rows' options (cfg.eos_token_id ends a row).
            rules: token sequences the rows must never produce (bad words, <unk>), DRY's breakers.
            states: per-row DecoderState to continue from.
            owner: stored on each Row.
        """
        # Each row gets its own random stream (a key for uniforms.py): from cfg.seed (row i takes the i-th
        # key drawn from it), so a seeded request gives the same texts whatever shares the batch and
        # whenever its rows start sampling; without a seed, from the operating system's entropy.
        self._drop_ahead()
        seeder = random.Random(cfg.seed) if cfg.seed is not None else random.SystemRandom()
        keys = [seeder.getrandbits(64) for _ in prompts]
        states = list(states) if states else [None] * len(prompts)
        feeds = [list(st.pending if st else []) + list(ids) for ids, st in zip(prompts, states)]
        vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
        inline = [0 < len(f) <= self.inline_prefill and cfg.max_new_tokens > 0 and vocab is not None
                  for f in feeds]
        packed = [i for i, x in enumerate(inline) if not x]
        n = len(prompts)
        L, H = (self.state[0].shape[0], self.state[0].shape[2]) if self.state is not None else (None, None)
        if packed:
            lg, (hp, cp) = prefill(self.model, [prompts[i] for i in packed], [states[i] for i in packed])
            vocab, (L, _, H) = lg.shape[-1], hp.shape
        if len(packed) < n:  # short prompts are fed through the shared step, a token per step
            L = L or self.model.config.num_layers
            H = H or self.model.config.hidden_size
        logits = torch.zeros(n, vocab, device=self.device)
        h = torch.zeros(L, n, H, device=self.device, dtype=self.dtype)
        c = torch.zeros(L, n, H, device=self.device, dtype=self.dtype)
        if packed:
            idx = torch.tensor(packed, device=self.device)
            logits[idx], h[:, idx], c[:, idx] = lg, hp, cp
        pending = torch.zeros(n, dtype=torch.long, device=self.device)
        for i in range(n):
            if inline[i]:
                pending[i] = feeds[i][0]
                if states[i] is not None:
                    h[:, i], c[:, i] = states[i].h[:, 0].to(self.device), states[i].c[:, 0].to(self.device)
        if self.history is None:
            self.history = History(vocab, self.device)
        if self.state is None:
            self.logits, self.state = logits, (h, c)
        else:
            self.logits = torch.cat([self.logits, logits])
            self.state = (torch.cat([self.state[0], h], 1), torch.cat([self.state[1], c], 1))
        self.pending = torch.cat([self.pending, pending])
        self.has_pending += inline
        self.history.add(prompts, cfg, rules, cfg.eos_token_id)
        deadline = time.monotonic() + cfg.max_time if cfg.max_time else None
        new = [Row(SequenceOutput([], "length", [] if cfg.logprobs else None), cfg, owner, i, deadline,
                   feed=feeds[i][1:] if inline[i] else [])
               for i in range(n)]
        self.rows += new
        self.arrays = self.arrays + RowArrays.for_rows(keys, cfg, deadline)
        if cfg.max_new_tokens == 0:
            for row in new:
                self.finish(row, "length", fed=True)
        return new

    def finish(self, row: Row, reason: str, fed: bool = False) -> None:
        """Mark `row` done and keep its state for continuing: the LSTM state and, unless it was already
        `fed` to the LSTM, the last token (chosen after that state). It leaves the batch at the next step."""
        if not row.active:
            return
        row.active = False
        row.out.finish_reason = reason
        b = self.rows.index(row)
        h, c = self.state
        row.out.state = DecoderState(h[:, b:b + 1].clone(), c[:, b:b + 1].clone(),
                                     [] if fed else row.out.token_ids[-1:])

    def _finish_many(self, ends: List[Tuple[int, str]], h: Tensor, c: Tensor) -> None:
        """Finish rows `ends` = [(batch index, reason)] at states h, c (L, B, H) in one gather each."""
        idx = torch.tensor([b for b, _ in ends], device=self.device)
        hs, cs = h[:, idx].split(1, 1), c[:, idx].split(1, 1)  # (L, 1, H) views, made in one call each
        for i, (b, reason) in enumerate(ends):
            row = self.rows[b]
            row.active = False
            row.out.finish_reason = reason
            row.out.state = DecoderState(hs[i], cs[i], row.out.token_ids[-1:])

    def cancel(self, row: Row) -> None:
        """Drop `row` without keeping anything (its client went away)."""
        row.active = False

    def _compact(self) -> None:
        """Remove finished rows from the batch tensors."""
        keep = [i for i, r in enumerate(self.rows) if r.active]
        if len(keep) == len(self.rows):
            return
        self._drop_ahead()
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.has_pending = [self.has_pending[i] for i in keep]
        self.logits, self.pending = self.logits[idx], self.pending[idx]
        self.state = (self.state[0][:, idx], self.state[1][:, idx])
        self.arrays = self.arrays.take(keep)
        self.history.keep(keep)

    def _feed(self) -> None:
        """Run the chosen tokens through the LSTM (rows that joined since the last step have logits)."""
        if all(self.has_pending):
            out, self.state = self.model.step(self.pending, self.state)
            self.logits = out.float()
        elif any(self.has_pending):
            idx = torch.tensor([i for i, p in enumerate(self.has_pending) if p], device=self.device)
            h, c = self.state
            out, (h2, c2) = self.model.step(self.pending[idx], (h[:, idx], c[:, idx]))
            h, c = h.clone(), c.clone()
            h[:, idx], c[:, idx] = h2, c2
            self.state = (h, c)
            self.logits = self.logits.index_copy(0, idx, out.float())

    def _uniforms(self, steps: int = 1, live: Optional[np.ndarray] = None) -> Tensor:
        """(steps, B) uniforms, each row's next ones from its own key (greedy rows, finished rows and rows
        still reading their prompt draw none and get zeros).

        Args:
            steps: how many per row.
            live: the batch indices of the rows that may draw, when the caller knows them (a block run).
        """
        if live is None:
            live = [b for b, r in enumerate(self.rows) if r.active and not r.feed]
        a = self.arrays
        draws = np.zeros(len(self.rows), dtype=bool)
        draws[live] = True
        draws &= a.sampling
        # float32, as sampling uses them: rounded here once, not by a kernel at every step
        u = (uniforms(a.keys, a.draws, steps) * draws).astype(np.float32)
        a.draws += np.uint64(steps) * draws.astype(np.uint64)
        return torch.from_numpy(u).to(self.device, non_blocking=True)

    @torch.inference_mode()
    def step(self) -> List[Tuple[Row, Optional[int]]]:
        """Choose one token for every active row: (row, token) pairs, with None for a row that ended
        without one (every token banned)."""
        self._drop_ahead()
        self._compact()
        if not self.rows:
            return []
        self._feed()
        warming = [bool(r.feed) for r in self.rows]  # still reading their prompt: no token of their own yet
        h, P = self.history, self.history.params
        logits = apply_processors(self.logits.clone(), h) if h.has_processors else self.logits
        blocked: List[bool] = []
        if h.has_processors:  # bans can leave a row no token at all: that row ends here
            dead = torch.isneginf(logits).all(-1)
            if bool(dead.any()):
                blocked = dead.tolist()
                logits = logits.masked_fill(dead[:, None], 0.0)
        if P.any_sample:
            new = sample(warp(logits, P).softmax(-1), self._uniforms()[0])
            if P.any_greedy:
                new = torch.where(P.greedy, logits.argmax(-1), new)
        else:
            new = logits.argmax(-1)
        logp = top = None
        if P.any_logprobs:
            lsm = self.logits.log_softmax(-1)
            logp = lsm.gather(-1, new[:, None]).squeeze(-1).tolist()
            if P.top_logprobs:
                top = lsm.topk(min(P.top_logprobs, lsm.shape[-1]), -1)
                top = (top.values.tolist(), top.indices.tolist())
        if any(warming):
            new = new.clone()
            for b, r in enumerate(self.rows):
                if warming[b]:
                    new[b] = r.feed.pop(0)
        h.append(new, skip=warming if any(warming) else None)
        self.pending = new
        self.has_pending = [True] * len(self.rows)
        now = time.monotonic()
        chosen: List[Tuple[Row, Optional[int]]] = []
        ends: List[Tuple[int, str]] = []
        for b, (row, tok) in enumerate(zip(self.rows, new.tolist())):
            if not row.active or warming[b]:
                continue
            if blocked and blocked[b]:
                self.finish(row, "length", fed=True)
                chosen.append((row, None))
                continue
            o = row.out
            o.token_ids.append(tok)
            if o.logprobs is not None:
                o.logprobs.append(logp[b])
                if row.cfg.top_logprobs:
                    k = row.cfg.top_logprobs
                    o.top_logprobs = (o.top_logprobs or []) + [dict(zip(top[1][b][:k], top[0][b][:k]))]
            chosen.append((row, tok))
            if tok == row.cfg.eos_token_id and len(o.token_ids) > row.cfg.min_new_tokens:
                ends.append((b, "eos"))
            elif len(o.token_ids) >= row.cfg.max_new_tokens or (row.deadline is not None and now > row.deadline):
                ends.append((b, "length"))
        if ends:
            self._finish_many(ends, *self.state)
        return chosen

    @torch.inference_mode()
    def advance(self, limit: int = 0) -> List[Tuple[Row, List[int]]]:
        """Tokens for every active row: several steps as one block where the rows allow it, else one step.

        The tokens, the ends (eos, max_new_tokens) and the states kept for continuing are those of calling
        step() as often; a row's tokens stop where it ends. Stop strings are the caller's, so a caller that
        has them should call step().

        Args:
            limit: the most steps (0: up to `block_steps`).

        Returns:
            (row, its new tokens) for every row that was active.
        """
        run = self._block_run()
        if run is None:
            return [(row, [] if tok is None else [tok]) for row, tok in self.step()]
        need = int(run.room.max()) if not limit else min(int(run.room.max()), limit)
        steps = block_size(need, self.block_steps)
        count = max(1, min(self.pipeline, need // steps))
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.steps != steps:  # the caller asked for fewer steps
            self._give_back(ahead)
            ahead = None
        first = ahead.slot if ahead is not None else 0
        pair: Dict[int, Block] = {} if ahead is None else {first: ahead.block}
        last = None
        for i in range(count):
            # Block i is queued before the host reads block i - 1, so the host's work (the next block's
            # uniforms, reading the tokens, the rows' ends) runs while the GPU works; the two alternate
            # buffers, and block i + 1 is queued only after block i - 1 is read.
            slot = (first + i) % 2
            if slot not in pair:
                pair[slot] = self._blocks.get(self.model, self.history.params, len(self.rows), steps, slot)
            block = pair[slot]
            if i > 0 or ahead is None:  # else it runs already, from (self.pending, self.state)
                src = (self.pending, *self.state) if last is None else (last.tokens[-1], last.hs[-1], last.cs[-1])
                block.start(*src, self._uniforms(steps, run.rows()))
            if last is not None:
                self._collect(last, run)
            last = block
            if not len(run.pos):
                break
        else:
            if self.ahead:
                self._queue_ahead(last, run, (first + count) % 2, limit)
            self._collect(last, run)
        self.pending = last.tokens[-1].clone()
        self.state = (last.hs[-1].clone(), last.cs[-1].clone())
        return [(self.rows[b], new) for b, new in zip(run.live.tolist(), run.got())]

    def _queue_ahead(self, last: Block, run: BlockRun, slot: int, limit: int) -> None:
        """Start the block the next advance() will want (with the same `limit`), from `last`'s outputs,
        before `last` is read."""
        need = int(run.room[run.pos].max()) - last.steps  # unless the longest row ends in `last`
        if need < 1:
            return
        if limit:
            need = min(need, limit)
        steps = block_size(need, self.block_steps)
        block = self._blocks.get(self.model, self.history.params, len(self.rows), steps, slot)
        live = run.rows()
        block.start(last.tokens[-1], last.hs[-1], last.cs[-1], self._uniforms(steps, live))
        self._ahead = Ahead(block, steps, slot, live)

    def _give_back(self, ahead: Ahead) -> None:
        """Undo a queued block's draws, so that the rows' next numbers are the ones it took."""
        a = self.arrays
        rows = ahead.rows[a.sampling[ahead.rows]]
        a.draws[rows] -= np.uint64(ahead.steps)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._give_back(self._ahead)
            self._ahead = None

    def _collect(self, block: Block, run: BlockRun) -> None:
        """Give the rows still live in `run` their tokens from a finished block (run while the GPU works on
        the next one), and end the rows that end in it at the state of the step they end at."""
        for j, rows in run.read(block.result().numpy(), time.monotonic(), self.history.tokens).items():
            self._finish_many(rows, block.hs[j], block.cs[j])

    def _block_run(self) -> Optional[BlockRun]:
        """The rows as a block run, or None when they need step() instead.

        A block needs rows whose every choice can be made on the device: no penalties, n-gram or
        multi-token bans, DRY, min_new_tokens or logprobs (blocks.py), no prompt still being read. Finished
        rows ride along unseen until they are half the batch, so that a batch is not re-captured each time
        one of its rows ends.
        """
        if self.block_steps < 2 or not self.rows or not all(self.has_pending) or self.history.stepwise \
                or any(r.feed for r in self.rows):
            return None
        live = [b for b, r in enumerate(self.rows) if r.active]
        if live and 2 * len(live) <= len(self.rows):
            self._compact()
            live = list(range(len(self.rows)))
        return BlockRun(live, [self.rows[b].out.token_ids for b in live], self.arrays) if live else None

    @property
    def done(self) -> bool:
        return not any(r.active for r in self.rows)
