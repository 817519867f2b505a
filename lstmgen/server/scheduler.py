"""Continuous batching: one engine thread steps every active request of every model.

Requests wait in a bounded queue per model; between two steps a model's Scheduler admits as many as fit
in `max_batch` rows, steps the whole batch once, hands each request its new text, and lets finished or
abandoned requests leave. The HTTP side (asyncio) and the engine meet in `Request`: the engine puts
events on the request's asyncio queue with `call_soon_threadsafe`, once per step for all requests.

A beam search request is a BeamJob stepped once per batch step beside the batch, so that a search of
many beams delays the streams by one of its steps at most. All of the server's torch work runs on the
engine thread (other work, such as prompt scoring, is handed to it with `Engine.call`). That is a speed
matter, not tidiness: each thread that runs torch ops owns an OpenMP team, and as soon as two teams
exist on a machine with as many cores as one team's threads, GNU OpenMP stops spin-waiting and every parallel region pays a sleep and wake-up; we measured the batch-64
step 15 % slower, and twice as slow with OMP_WAIT_POLICY=active. `lstmgen serve` therefore loads the
models and runs the engine on the main thread and puts the HTTP server on another.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional

from ..generation import SamplingDecoder, TextJob
from .metrics import Metrics
from .threads import ThreadTuner


class QueueFull(Exception):
    """The model's queue is at max_queue: answer 429."""


@dataclass(eq=False)
class Request:
    """One completion request as the scheduler sees it.

    Events put on `events`: ("pieces", [(slot, text, made_a_token), ...]) after one or more steps,
    ("done", job) at the end, ("error", exception) if it could not run.
    """

    prompts: List[str]
    options: Dict[str, Any]
    loop: asyncio.AbstractEventLoop
    prompt_ids: Optional[List[List[int]]] = None  # token ids given by the client, used as they are
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    created: float = field(default_factory=time.monotonic)
    job: Optional[TextJob] = None
    cancelled: bool = False
    first_token_at: Optional[float] = None
    held: list = field(default_factory=list)  # pieces not yet handed over (stream_interval)
    last_emit: float = 0.0
    beam: bool = False  # a beam search (BeamJob), stepped beside the batch
    checked: float = field(default_factory=time.monotonic)  # when the HTTP side last asked if the client is there

    @property
    def rows(self) -> int:
        """The batch rows it takes: its prompts, times its beams for a beam search."""
        return len(self.prompts) * (int(self.options.get("num_beams") or 1) if self.beam else 1)

    def emit(self, event) -> None:
        deliver([(self, event)])

    def cancel(self) -> None:
        """The client went away or timed out: the scheduler drops its rows before the next step."""
        self.cancelled = True


def deliver(events: List[tuple]) -> None:
    """Hand (request, event) pairs to their event loop in one call: one wake-up of the loop per step
    instead of one per request (the self-pipe write and the hand-over of the GIL cost more than the rest)."""
    if not events:
        return
    loop = events[0][0].loop

    def put() -> None:
        for req, event in events:
            req.events.put_nowait(event)
    try:
        loop.call_soon_threadsafe(put)
    except RuntimeError:  # the event loop has closed: nobody is listening
        for req, _ in events:
            req.cancelled = True


class Scheduler:
    """One model's requests as one batch (continuous batching); stepped by the Engine.

    Args:
        name: the model's name (for metrics).
        pipeline: a TextGenerator.
        max_batch: the most rows stepped together.
        max_queue: the most requests waiting.
        metrics: where tokens are counted.
        stream_interval: a request's new text is handed over at most this often (seconds; its first token
            at once): with many streams, one chunk per step per client costs more than the LSTM step.
        inline_prefill: prompts up to this many tokens are read by the shared step (SamplingDecoder).
    """

    def __init__(self, name: str, pipeline, max_batch: int, max_queue: int, metrics: Metrics,
                 stream_interval: float = 0.0, inline_prefill: int = 0) -> None:
        self.name, self.pipeline, self.metrics = name, pipeline, metrics
        self.max_batch, self.max_queue, self.stream_interval = max_batch, max_queue, stream_interval
        self.inline_prefill = inline_prefill
        self.decoder = SamplingDecoder(pipeline.model, inline_prefill)
        self.waiting: Deque[Request] = collections.deque()
        self.running: List[Request] = []

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def active_rows(self) -> int:
        return sum(r.job.rows if r.beam else len(r.job.rows) for r in self.running if r.job)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def take(self) -> List[Request]:
        """Waiting requests whose rows fit in the batch (a request's n rows join together); called with
        the engine's lock held, so it only moves them."""
        taken, rows = [], self.active_rows
        while self.waiting and (rows + self.waiting[0].rows <= self.max_batch or rows == 0):
            req = self.waiting.popleft()
            if not req.cancelled:
                taken.append(req)
                rows += req.rows
        return taken

    def start(self, reqs: List[Request]) -> None:
        """Add the rows of `reqs` to the batch (long prompts are prefilled here)."""
        for req in reqs:
            try:
                if req.beam:
                    req.job = self.pipeline.new_beam_job(req.prompts, req.options, prompt_ids=req.prompt_ids)
                else:
                    req.job = self.pipeline.new_job(self.decoder, req.prompts, req.options,
                                                    prompt_ids=req.prompt_ids)
            except Exception as e:  # a bad option that slipped past validation: that request fails
                req.emit(("error", e))
                continue
            self.running.append(req)

    def step(self) -> None:
        """Drop abandoned requests, step the batch once, hand out the new text."""
        for req in self.running:
            if req.cancelled and not req.job.done:
                req.job.cancel()
        try:
            self._step()
        except Exception as e:  # a bug: fail the running requests, keep serving the next ones
            for req in self.running:
                req.job.cancel()
                req.emit(("error", e))
            self.running = []
            self.decoder = SamplingDecoder(self.pipeline.model, self.inline_prefill)

    def fail_all(self, error: Exception) -> None:
        for req in self.running + list(self.waiting):
            req.emit(("error", error))
        self.running, self.waiting = [], collections.deque()

    def _step(self) -> None:
        # A beam search takes one step per batch step (time-sliced): however many beams it has, no stream
        # waits for it longer than one of its steps.
        for req in self.running:
            if req.beam and not req.cancelled:
                req.job.step()
        out: Dict[int, list] = {}
        steps = self.decoder.step()
        for row, tok in steps:
            slot, piece = row.owner.push(row, tok)
            out.setdefault(id(row.owner), []).append((slot, piece, tok is not None))
        if steps:
            self.metrics.inc("lstmgen_generated_tokens_total", sum(t is not None for _, t in steps),
                             "Tokens generated", model=self.name)
        now = time.monotonic()
        still, events = [], []
        for req in self.running:
            req.held += out.get(id(req.job), ())
            if req.held and not req.cancelled and (req.first_token_at is None or req.job.done
                                                   or now - req.last_emit >= self.stream_interval):
                if req.first_token_at is None:
                    req.first_token_at = now
                events.append((req, ("pieces", req.held)))
                req.held, req.last_emit = [], now
            if req.job.done:
                if not req.cancelled:
                    events.append((req, ("done", req.job)))
            else:
                still.append(req)
        self.running = still
        deliver(events)


class Engine:
    """The thread that does all of the server's torch work: it steps every model's Scheduler in turn
    and runs the calls handed to it (`call`) between steps.

    Args:
        schedulers: the Scheduler of each language model, by name.
        threads: torch's intra-op threads for the steps; 0: chosen by measuring them (threads.py).
    """

    def __init__(self, schedulers: Dict[str, Scheduler], threads: int = 0) -> None:
        self.schedulers, self.threads = schedulers, threads
        self.calls: Deque[tuple] = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.thread: Optional[threading.Thread] = None

    def submit(self, model: str, req: Request) -> None:
        """Queue a request for `model`; QueueFull when its queue is full or the engine is stopping."""
        s = self.schedulers[model]
        with self.cond:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(s.waiting) >= s.max_queue:
                raise QueueFull(f"{len(s.waiting)} requests are already waiting for model {model!r}")
            s.waiting.append(req)
            self.cond.notify()

    def call(self, fn, *args, **kwargs) -> Future:
        """Run fn(*args, **kwargs) on the engine thread between two steps; its result as a Future."""
        fut: Future = Future()
        with self.cond:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            self.calls.append((fut, fn, args, kwargs))
            self.cond.notify()
        return fut

    def run(self) -> None:
        """Step until stop() (blocks; `lstmgen serve` runs it on the main thread)."""
        import torch

        most = torch.get_num_threads()
        tuner = ThreadTuner([1, most] if self.threads == 0 else [self.threads])  # on this thread: its team
        while True:
            with self.cond:
                while not self.stopping and not self.calls and not any(s.busy for s in self.schedulers.values()):
                    self.cond.wait()
                if self.stopping:
                    break
                calls, self.calls = list(self.calls), collections.deque()
                taken = [(s, s.take()) for s in self.schedulers.values()]
            for s, reqs in taken:
                s.start(reqs)
            for fut, fn, args, kwargs in calls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(*args, **kwargs))
                    except BaseException as e:  # handed back to the caller
                        fut.set_exception(e)
            for s in self.schedulers.values():
                if s.running:
                    tuner.before_step()
                    t0 = time.perf_counter()
                    s.step()
                    tuner.after_step(time.perf_counter() - t0)
        down = QueueFull("the server is shutting down")
        for s in self.schedulers.values():
            s.fail_all(down)
        for fut, *_ in self.calls:
            fut.set_exception(down)

    def start(self) -> None:
        """Run on a thread of its own (tests, and apps embedded in other programs)."""
        self.thread = threading.Thread(target=self.run, name="lstmgen-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)
