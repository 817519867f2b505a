"""Several decoding steps as one unit of work: one CUDA graph replay and one read of the tokens.

At batch 1 a decoding step is about 25 tiny kernels; launched one by one from Python, with the chosen
token read back to the host after each step, the launches and the read cost far more than the GPU's work
(an eager per-token loop made about 1,300 tokens/s on an H200). A block runs K steps without the host:
the step (embedding, the LSTM layers, the output layer, the row's processors and warpers, inverse-CDF
sampling) is captured K times in a CUDA graph (torch.cuda.CUDAGraph) whose inputs are static buffers, the
K uniforms per row are drawn on the host beforehand from each row's own counter-based generator
(uniforms.py; so a row's text still does not depend on its batch, and equals the step-by-step decoder's),
and the K tokens come back in one copy. A row that ends inside a block (eos, max_new_tokens) keeps the
state of the step it ended at: every step's state is kept in the block's buffers.

Only what needs no host decision between steps runs in a block: temperature, top-k, top-p, typical-p,
min-p, greedy rows, logit_bias and single-token bans. Penalties, n-gram and multi-token bans,
min_new_tokens and logprobs need the text so far or report per token; rows with those take the
step-by-step path (`SamplingDecoder.advance` decides).
"""
from __future__ import annotations

import warnings
from dataclasses import fields, replace
from typing import Dict, Optional

import torch
from torch import Tensor

from .processors import NEG_INF, RowParams, warp


def choose(logits: Tensor, P: RowParams, uniforms: Optional[Tensor], out: Optional[Tensor] = None) -> Tensor:
    """Every row's next token from its logits under the rows' options `P`, without any host
    synchronisation: the single-token processors (bias, bans), then greedy rows take the argmax and
    sampling rows an inverse-CDF draw, as SamplingDecoder.step() does."""
    if P.bias is not None:
        logits = logits + P.bias
    if P.banned is not None:
        logits = logits.masked_fill(P.banned, NEG_INF)
    if not P.any_sample:
        return torch.argmax(logits, -1, out=out)
    probs = warp(logits, P).softmax(-1)
    cdf = probs.cumsum(-1)
    x = uniforms[:, None] * cdf[:, -1:]  # float32 uniforms, as SamplingDecoder._uniforms() makes them
    tok = torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
    # x rounded up to the total lands on a zero-probability token (rare): take the most likely instead,
    # as processors.sample() does, without asking the host whether it happened
    zero = probs.gather(-1, tok[:, None]).squeeze(-1) == 0
    if not P.any_greedy:
        return torch.where(zero, probs.argmax(-1), tok, out=out)
    tok = torch.where(zero, probs.argmax(-1), tok)
    return torch.where(P.greedy, logits.argmax(-1), tok, out=out)


def layout(P: RowParams) -> tuple:
    """What decides which kernels a step runs (the rest of the options are tensor values)."""
    return (P.use_temperature, P.use_top_k, P.top_k_max, P.use_top_p, P.use_typical_p, P.use_min_p,
            P.any_greedy, P.any_sample, P.bias is None, P.banned is None)


class Block:
    """K decoding steps of a batch of B rows over static buffers, captured as one CUDA graph on a GPU.

    `start()` with the tokens chosen but not yet fed, the state and the uniforms (K, B); `result()` gives
    the tokens (K, B) once they are on the host, and `hs`, `cs` (K, L, B, H) hold the state after each
    step: tokens[j] was chosen from the logits of state (hs[j], cs[j]). `start()` returns at once on a GPU,
    so the host can work while the block runs.

    The rows' options live in the block's own copy of RowParams (the graph reads those tensors);
    `load()` copies another batch's options of the same layout into it.

    Args:
        model: the language model (eval mode).
        params: the rows' options (History.params).
        batch: B.
        steps: K.
        graph: capture a CUDA graph (on a GPU); False runs the same steps eagerly (CPU, tests).
    """

    def __init__(self, model, params: RowParams, batch: int, steps: int, graph: bool) -> None:
        self.model, self.steps = model, steps
        self.params = replace(params, **{k: v.clone() for k, v in _tensors(params).items()})
        w = next(model.parameters())
        L, H, dev = model.config.num_layers, model.config.hidden_size, w.device
        self.tok = torch.zeros(batch, dtype=torch.long, device=dev)
        self.h = torch.zeros(L, batch, H, device=dev, dtype=w.dtype)
        self.c = torch.zeros(L, batch, H, device=dev, dtype=w.dtype)
        self.uniforms = torch.zeros(steps, batch, device=dev)
        self.tokens = torch.zeros(steps, batch, dtype=torch.long, device=dev)
        self.hs = torch.zeros(steps, L, batch, H, device=dev, dtype=w.dtype)
        self.cs = torch.zeros(steps, L, batch, H, device=dev, dtype=w.dtype)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.host, self.copied = self.tokens, None  # where result() reads; on a GPU, pinned memory and an event
        if dev.type == "cuda":
            self.host = torch.empty(steps, batch, dtype=torch.long, pin_memory=True)
            self.copied = torch.cuda.Event()
        if graph:
            self.graph = self._capture()

    def _steps(self, n: int) -> None:
        """n steps from the static inputs into the static outputs."""
        tok, state = self.tok, (self.h, self.c)
        for j in range(n):  # each step writes straight into the block's buffers: no copies
            logits, state = self.model.step(tok, state, out=(self.hs[j], self.cs[j]))
            tok = choose(logits.float(), self.params, self.uniforms[j], out=self.tokens[j])

    def _capture(self) -> torch.cuda.CUDAGraph:
        # Lazy initialisation (cuBLAS handles, workspaces) must happen before capture, on a side stream
        # (the torch.cuda.graphs recipe); one step is enough to touch every kernel.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._steps(1)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls (a second generate(), a server) may go on meanwhile
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            self._steps(self.steps)
        return g

    def load(self, params: RowParams) -> None:
        """Take the options of another batch of the same size and layout."""
        for k, v in _tensors(params).items():
            getattr(self.params, k).copy_(v)

    def start(self, tok: Tensor, h: Tensor, c: Tensor, uniforms: Tensor) -> None:
        """Run the K steps from these inputs (copied into the block's buffers; views of another block's
        outputs are fine) and start copying the tokens to the host."""
        self.tok.copy_(tok)
        self.h.copy_(h)
        self.c.copy_(c)
        self.uniforms.copy_(uniforms)
        self.run()
        if self.copied is not None:
            self.host.copy_(self.tokens, non_blocking=True)
            self.copied.record()

    def run(self) -> None:
        """The K steps over the buffers as they are."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._steps(self.steps)

    def result(self) -> Tensor:
        """The tokens (K, B) on the host, waiting for this block only (not for work queued after it)."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.host


def _tensors(params: RowParams) -> Dict[str, Tensor]:
    return {f.name: getattr(params, f.name) for f in fields(params) if isinstance(getattr(params, f.name), Tensor)}


class BlockCache:
    """Blocks by model weights, batch size, steps, options layout and slot (two per shape, so that one runs
    while the host reads the other), so that each graph is captured once for as long as the cache lives:
    a pipeline keeps one across its generate() calls.

    A shape's first block runs its steps eagerly and the second use captures the graph: capturing costs
    tens of milliseconds a shape, more than a one-off short text gains from it. The key holds the weights'
    addresses: a graph reads them where they were at capture, so a model moved or cast since gets new blocks.

    Args:
        graph: whether blocks capture CUDA graphs.
        size: the most blocks kept (the oldest goes first).
    """

    def __init__(self, graph: bool, size: int = 16) -> None:
        self.graph, self.size = graph, size
        self.blocks: Dict[tuple, Block] = {}
        self.uses: Dict[tuple, int] = {}

    def get(self, model, params: RowParams, batch: int, steps: int, slot: int = 0) -> Block:
        weights = tuple((p.data_ptr(), p.dtype) for p in model.parameters())
        key = (id(model), weights, batch, steps, layout(params), slot)
        block = self.blocks.pop(key, None)
        self.uses[key] = uses = self.uses.get(key, 0) + 1
        if block is not None and block.graph is None and self.graph and uses >= 2:
            block = None  # used again: now worth capturing
        if block is None:
            try:
                block = Block(model, params, batch, steps, self.graph and uses >= 2)
            except RuntimeError as e:  # an operation this torch cannot capture: run the same steps eagerly
                if not self.graph:
                    raise
                warnings.warn(f"decoding without CUDA graphs: capturing a block failed ({e})", RuntimeWarning)
                self.graph = False
                block = Block(model, params, batch, steps, False)
        else:
            block.load(params)
        self.blocks[key] = block  # most recently used last
        while len(self.blocks) > self.size:
            self.uses.pop(old := next(iter(self.blocks)), None)
            self.blocks.pop(old)
        return block


def block_size(n: int, largest: int) -> int:
    """The block to run when no row needs more than n tokens: the largest power of two up to `largest`
    that is at most n, so the last blocks of a text waste no steps (and at most log2(largest) sizes are
    ever captured)."""
    size = largest
    while size > 1 and size > n:
        size //= 2
    return size

