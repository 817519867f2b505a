"""The Trainer: training with a budget, evaluation, checkpoints and resume (checkpoint.py), for any Task (tasks.py):
truncated-BPTT language modelling, text classification.

One loop serves every budget: training ends when the largest of step/max_steps, epoch/max_epochs and
minutes/max_minutes reaches 1, and the cosine learning-rate schedule follows that same fraction, so a
30-minute run anneals over its 30 minutes just as a 10-epoch run anneals over its 10 epochs.
"""
from __future__ import annotations

import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
from tqdm import tqdm

from ..data import TokenArray
from ..errors import UserInputError
from .averaging import WeightAverage, stalled
from .checkpoint import LOG, Checkpointing
from .config import TrainConfig
from .distributed import (
    device_for,
    init_distributed,
    max_of,
    mean_of,
)
from .plots import plot_loss
from .tasks import LMTask

CLOCK_EVERY = 8  # steps between the ranks agreeing on the time used, under a time budget


def _zero_unless(ok: torch.Tensor, state):
    """The carried state where `ok` (a 0-d bool tensor), else zeros (the start state), kept on the device."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return torch.where(ok, state, 0.0)
    return type(state)(_zero_unless(ok, s) for s in state)


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; otherwise the named device."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserInputError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserInputError(f"--device {name}: MPS is not available here; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN's bf16 LSTM and matrix
    products can beat float32 (TrainConfig.cpu_amp). Linux only; elsewhere False."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@functools.lru_cache(maxsize=None)
def bf16_lstm_cpu() -> bool:
    """Whether oneDNN runs an LSTM in bf16 on this CPU at all (it needs AVX-512; on an AVX2 CPU the bf16
    LSTM fails with "could not create a primitive descriptor")."""
    try:
        with torch.autocast("cpu", torch.bfloat16):
            torch.nn.LSTM(4, 4)(torch.zeros(1, 1, 4))
        return True
    except RuntimeError:
        return False


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, then cosine from lr to min_lr_ratio * lr as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer(Checkpointing):
    """Trains a model on a task.

    Args:
        model: the model (moved to the chosen device).
        train: a Task (tasks.py), or training tokens for a language model (then `valid` are its
            validation tokens).
        valid: validation tokens of a language model (None: no evaluation, the last weights are kept).
        config: the settings.
        out_dir: where the log, the loss plot and the checkpoint go.
        on_best: called with the validation metrics whenever they improve (e.g. to save the model folder).
        on_eval: called after every evaluation with the step and its metrics, with the weights just judged;
            what it returns joins the logged record (the LM recipe prints and logs a sample there).
    """

    def __init__(self, model: torch.nn.Module, train: Union[TokenArray, "LMTask", object],
                 valid: Optional[TokenArray], config: TrainConfig, out_dir,
                 on_best: Optional[Callable[[Dict], None]] = None,
                 on_eval: Optional[Callable[[int, Dict], Optional[Dict]]] = None) -> None:
        self.cfg, self.out = config, Path(out_dir)
        self.dist = init_distributed(config.device)
        self.device = device_for(self.dist, pick_device(config.device))
        torch.manual_seed(config.seed)
        self.model = model.to(self.device)
        if config.cpu_amp and config.amp and self.device.type == "cpu" and not bf16_lstm_cpu():
            raise UserInputError("cpu_amp (--cpu-amp): this CPU cannot run the LSTM in bf16 (oneDNN needs AVX-512); "
                                 "leave it out to train in float32")
        if config.cpu_amp and config.amp and self.device.type == "cpu" and not native_bf16_cpu() and self.dist.main:
            tqdm.write("lstmgen: this CPU has no bf16 arithmetic (AVX512-BF16, AMX): bf16 autocast (cpu_amp) "
                       "will likely train slower than float32", file=sys.stderr)
        if config.compile:
            if not hasattr(model, "compile_parts"):
                raise UserInputError("compile applies to language models (TrainConfig.compile)")
            model.compile_parts()
        if isinstance(train, TokenArray):  # under torchrun each rank reads its own shard of the stream
            self.task = LMTask(train, valid, config, self.dist.rank, self.dist.world)
        elif self.dist.active:
            raise UserInputError("distributed training (torchrun) runs language models, `lstmgen train lm`; "
                                 "train this task in one process")
        else:
            self.task = train
        if self.device.type == "cuda" and hasattr(self.task, "to_device"):
            self.task.to_device(self.device)
        # The network the training step runs: DDP averages the gradients over the ranks in backward.
        self.net = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.has_valid = bool(self.task.valid)
        self.opt = self._make_optimizer()
        self.on_best, self.on_eval = on_best, on_eval
        self.step, self.window, self.epoch, self.elapsed = 0, 0, 0, 0.0
        self.best: Optional[Dict] = None
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.bad_evals = 0
        self.bad_steps, self.lr_scale = 0, 1.0
        # With fused AdamW the finiteness check of each step stays on the device (see _optimizer_step):
        # the length of the current run of skipped steps, the longest run and the count since the last log.
        self.deferred = isinstance(self.opt, torch.optim.AdamW) and bool(self.opt.defaults.get("fused"))
        self.bad_run, self.worst_run, self.skipped = (torch.zeros((), device=self.device) for _ in range(3))
        self.state = self.task.initial_state(self.model, self.device)
        # Averaged SGD (ntasgd, asgd): the running mean of the weights since averaging began, its count,
        # and the validation losses that trigger it.
        self.avg: Optional[WeightAverage] = None
        self.val_history: List[float] = []
        if config.optimizer == "asgd":
            self.avg = WeightAverage(self.model)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        # Layer groups with their own learning-rate scale (discriminative fine-tuning), or one group.
        params = self.model.param_groups(c.discriminative_lr) if hasattr(self.model, "param_groups") \
            else list(self.model.parameters())
        if c.optimizer in ("ntasgd", "asgd"):  # plain SGD steps; the averaging is done here (averaging.py)
            return torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.optimizer == "rmsprop":  # Keras' defaults: rho 0.9, eps 1e-7
            return torch.optim.RMSprop(params, lr=c.lr, alpha=0.9, eps=1e-7, weight_decay=c.weight_decay)
        # The fused kernel: one pass over the weights on GPU and on CPU (4x the foreach version's speed on
        # CPU here), and it takes `found_inf`, which keeps the skip of a NaN step off the host.
        return torch.optim.AdamW(params, lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay, fused=True)

    # -- budget ------------------------------------------------------------------------------------
    def progress(self) -> float:
        """The fraction of the budget used: the largest of the step, epoch and time fractions."""
        c, fr = self.cfg, [0.0]
        if c.max_steps:
            fr.append(self.step / c.max_steps)
        if c.max_epochs:
            fr.append((self.epoch + self.window / len(self.task)) / c.max_epochs)
        if c.max_minutes:
            fr.append(self.elapsed / (60 * c.max_minutes))
        return max(fr)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> Dict:
        """Train until the budget is spent or early stopping; leaves the best weights in the model.

        Returns a summary: steps, epochs, minutes, best validation metrics, whether it was interrupted.
        """
        c, main = self.cfg, self.dist.main
        self.out.mkdir(parents=True, exist_ok=True)
        log = open(self.out / LOG, "a", encoding="utf-8") if main else None  # rank 0 alone writes
        bar = tqdm(total=self._estimate_total(), initial=self.step, unit="step", dynamic_ncols=True,
                   desc="train", mininterval=1.0, disable=not main)
        use_amp = c.amp and (self.device.type == "cuda" or (self.device.type == "cpu" and c.cpu_amp))
        run_loss = torch.zeros((), device=self.device)
        run_n, run_tokens, t_last = 0, 0, time.perf_counter()
        t0 = time.perf_counter() - self.elapsed
        interrupted, stopped_early = False, False
        unfrozen_for = -1  # the epoch whose layer groups are trainable (gradual unfreezing)
        try:
            while self.progress() < 1.0:
                self.model.train()
                lr = lr_at(c, self.step, self.progress()) * self.lr_scale
                for g in self.opt.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                if c.gradual_unfreezing and self.epoch != unfrozen_for and hasattr(self.model, "unfreeze_top"):
                    self.model.unfreeze_top(self.epoch + 1)  # the head alone first, one group more per epoch
                    unfrozen_for = self.epoch
                batch = [self._to_device(t) for t in self.task.batch(self.epoch, self.window)]
                loss, state, n_tokens, *shown = self.task.loss(self.net, batch, self.state, use_amp)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip if c.clip else float("inf"))
                ok = self._optimizer_step(norm)  # a NaN/inf loss makes the gradient norm non-finite too
                if self.deferred:  # no host sync: a skipped step's loss is not counted, its state restarts
                    self.state = _zero_unless(ok, state)
                    run_loss += torch.where(ok, shown[0] if shown else loss.detach(), 0.0)
                    run_n = ok.float() + run_n
                elif ok:
                    if self.avg is not None:
                        self.avg.fold()
                    self.state = state
                    run_loss += shown[0] if shown else loss.detach()
                    run_n += 1
                    self.bad_steps = 0
                else:
                    self._bad_step(float(loss.detach()))
                    if self.bad_steps >= c.max_bad_steps:
                        self._roll_back()
                        bar.n = self.step
                        continue
                run_tokens += n_tokens
                self.step += 1
                self.window += 1
                if self.window == len(self.task):  # epoch end: streams restart at their beginnings
                    self.window, self.epoch = 0, self.epoch + 1
                    self.state = self.task.initial_state(self.model, self.device)
                if not (self.dist.active and c.max_minutes):
                    self.elapsed = time.perf_counter() - t0
                elif self.step % CLOCK_EVERY == 0:
                    # Every rank must agree on when the budget ends, so the clock is the slowest rank's. The
                    # agreement waits for every rank's host: once every few steps, not every step, so the host
                    # may run ahead of the GPU; the budget ends at most CLOCK_EVERY steps late.
                    self.elapsed = max_of(self.dist, time.perf_counter() - t0, self.device)
                bar.update(1)
                due = self.step % c.eval_every == 0 or self.progress() >= 1.0  # evaluate and checkpoint
                if (self.step % c.log_every == 0 or due) and self.deferred and self._report_skipped():
                    bar.n = self.step
                    continue
                if self.step % c.log_every == 0 or due:
                    now = time.perf_counter()
                    record = {"step": self.step, "epoch": round(self.epoch + self.window / len(self.task), 4),
                              "loss": mean_of(self.dist, run_loss).item() / max(float(run_n), 1.0), "lr": lr,
                              "grad_norm": float(norm),
                              "tokens_per_s": round(self.dist.world * run_tokens / max(now - t_last, 1e-9), 1),
                              "elapsed_s": round(self.elapsed, 2)}
                    run_loss.zero_()
                    run_n, run_tokens, t_last = 0, 0, now
                    if due:
                        if self.has_valid:
                            record.update(self._evaluate())
                            stopped_early = c.patience is not None and self.bad_evals >= c.patience
                        if c.checkpoint_every is None or self.step % c.checkpoint_every == 0 or stopped_early \
                                or self.progress() >= 1.0:
                            self.save_checkpoint()
                        t_last = time.perf_counter()  # evaluation time is not training throughput
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    bar.total = self._estimate_total()
                    bar.set_postfix(**self.task.postfix(record), tok_s=f"{record['tokens_per_s']:.0f}")
                    if stopped_early:
                        break
        except KeyboardInterrupt:
            interrupted = True
            self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.avg is not None:  # no validation: the averaged weights are the result of averaged SGD
            self.avg.swap()
        if main:
            self.plot()
        return {"steps": self.step, "epochs": round(self.epoch + self.window / len(self.task), 3),
                "minutes": round(self.elapsed / 60, 2), "best": self.best, "interrupted": interrupted,
                "stopped_early": stopped_early}

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the training device. From the host to a GPU through page-locked memory, so that
        the copy runs asynchronously while the GPU works (torch's caching host allocator reuses a pinned
        buffer only once its copy is done); the LM's token stream usually sits on the GPU already."""
        if self.device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _estimate_total(self) -> int:
        p = self.progress()
        if self.cfg.max_steps and not (self.cfg.max_epochs or self.cfg.max_minutes):
            return self.cfg.max_steps
        if self.step == 0 or p <= 0:
            c = self.cfg
            return c.max_steps or int(len(self.task) * (c.max_epochs or 1))
        return max(self.step, int(round(self.step / p)))

    # -- numerics ----------------------------------------------------------------------------------
    def _optimizer_step(self, norm: torch.Tensor):
        """Step unless the gradient norm is not finite; returns whether it stepped.

        With fused AdamW the answer stays on the device as a 0-d tensor: the optimizer reads it as
        `found_inf` (as under torch.amp's GradScaler) and then leaves the weights and its moments as they
        were, so the hot loop never waits for the GPU; the trainer reads the counts when it logs
        (_report_skipped). Other optimizers read the norm back (one host synchronisation per step).
        """
        ok = torch.isfinite(norm)
        if not self.deferred:
            ok = bool(ok)
            if ok:
                self.opt.step()
            return ok
        self.opt.found_inf = (~ok).float()
        self.opt.step()
        self.bad_run = torch.where(ok, 0.0, self.bad_run + 1)
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        self.skipped += (~ok).float()
        return ok

    def _report_skipped(self) -> bool:
        """At a log point of the deferred check: say how many steps were skipped since the last one, and
        roll back if a run of them reached max_bad_steps (then returns True)."""
        skipped, worst = int(self.skipped), int(self.worst_run)
        if not skipped:
            return False
        self.skipped.zero_()
        self.worst_run.copy_(self.bad_run)
        tqdm.write(f"lstmgen: {skipped} step(s) up to step {self.step} had a non-finite loss or gradient and "
                   f"were skipped (at most {worst} in a row)", file=sys.stderr)
        if worst < self.cfg.max_bad_steps:
            return False
        self.bad_run.zero_()
        self.worst_run.zero_()
        self._roll_back()
        return True

    def _bad_step(self, loss: float) -> None:
        """Skip a step whose loss or gradient is not finite; the carried state restarts from zero."""
        self.opt.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.state = self.task.initial_state(self.model, self.device)
        tqdm.write(f"lstmgen: step {self.step + 1}: non-finite loss or gradient (loss {loss}); step skipped "
                   f"({self.bad_steps} in a row)", file=sys.stderr)

    def _roll_back(self) -> None:
        """Too many bad steps in a row: back to the last checkpoint, with half the learning rate."""
        scale = self.lr_scale * 0.5
        where = "the last checkpoint" if self.resume() else "the current weights (no checkpoint yet)"
        self.lr_scale, self.bad_steps = scale, 0
        tqdm.write(f"lstmgen: {self.cfg.max_bad_steps} bad steps in a row: rolled back to {where} at step "
                   f"{self.step}; learning rate scaled by {scale:g}", file=sys.stderr)

    def _evaluate(self) -> Dict:
        if self.avg is not None:  # averaged SGD is judged (and kept) with the averaged weights
            self.avg.swap()
        try:
            record = self.task.evaluate(self.model, self.device)
            if self.task.better(record, self.best):
                self.best = {"step": self.step, **record}
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.bad_evals = 0
                if self.on_best is not None and self.dist.main:
                    self.on_best(self.best)
            else:
                self.bad_evals += 1
            if self.on_eval is not None and self.dist.main:
                record = {**record, **(self.on_eval(self.step, record) or {})}
        finally:
            if self.avg is not None:
                self.avg.swap()
        self._maybe_trigger(record)
        return record

    def _maybe_trigger(self, record: Dict) -> None:
        """NT-ASGD: start averaging once the validation loss is worse than the best of the validations
        before the last `nonmono` ones (the non-monotone trigger of AWD-LSTM)."""
        loss = record.get("valid_loss")
        if self.cfg.optimizer != "ntasgd" or self.avg is not None or loss is None:
            return
        if stalled(self.val_history, loss, self.cfg.nonmono):
            self.avg = WeightAverage(self.model)
            tqdm.write(f"lstmgen: step {self.step}: validation stopped improving; averaging the weights from "
                       "here on (NT-ASGD)", file=sys.stderr)
        self.val_history.append(loss)

    def plot(self) -> None:
        path = self.out / LOG
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            plot_loss(records, self.out / "loss.png", title=f"{self.out.name}")
