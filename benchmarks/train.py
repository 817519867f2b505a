"""Training throughput: lstmgen's Trainer against a minimal hand-written PyTorch loop, in one run.

Both train the same model (embedding -> torch.nn.LSTM -> tied decoder) on the same random token stream
with the same batch, bptt, AdamW and carried state; the ratio of their tokens/s is the framework's
overhead (1.00 = none). Runs alternate (raw, ours, ours, raw, raw, ...) and the best of each is kept, so a
noisy neighbour slows both alike.

    python benchmarks/train.py            # CPU-sized configs
    python benchmarks/train.py --full     # the full sizes (for a GPU)
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lstmgen.data import StreamBatcher, TokenArray
from lstmgen.models import LanguageModel, LMConfig, detach_state
from lstmgen.training import TrainConfig, Trainer, pick_device
from lstmgen.training.trainer import lr_at

# name: (vocab, layers, hidden, batch, bptt) at full size, and the CPU-sized variant.
CONFIGS = {
    "char 3x512": ((65, 3, 512, 64, 256), (65, 3, 512, 16, 128)),
    "word 2x650": ((10000, 2, 650, 64, 70), (10000, 2, 650, 16, 70)),
    "awd 3x1150": ((33278, 3, 1150, 80, 70), (33278, 3, 1150, 4, 70)),
    "wide 2x2048": ((10000, 2, 2048, 128, 128), (10000, 2, 2048, 4, 64)),
}


def raw_loop(model: LanguageModel, ids: torch.Tensor, batch: int, bptt: int, steps: int, device,
             amp: bool = False, parts: frozenset = frozenset()) -> float:
    """The loop a user writes by hand; returns tokens/s. `parts` adds pieces of the Trainer's step one by
    one (--ablate): "data" its windows (StreamBatcher, the streams on the GPU as int32), "deferred" its
    NaN check kept on the device (found_inf, the state zeroed on a bad step, the loss summed on the
    device), "loop" its per-step bookkeeping (train mode, the scheduled learning rate, the progress bar)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01, fused=True)
    streams = ids[: (len(ids) // batch) * batch].view(batch, -1).to(device)
    batcher = StreamBatcher(ids.numpy(), batch, bptt)
    if "data" in parts and device.type == "cuda":
        batcher.to_device(device)
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, max_steps=steps + 2)
    bar = tqdm(total=steps + 2, disable=True) if "loop" in parts else None
    run_loss, bad_run = torch.zeros((), device=device), torch.zeros((), device=device)
    state = model.init_state(batch, device)
    model.train()
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            _sync(device)
            t0 = time.perf_counter()
        if bar is not None:
            model.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, i, i / (steps + 2))
        if "data" in parts:
            x, y = (t.to(device, non_blocking=True) for t in batcher.window(i % len(batcher)))
        else:
            k = (i * bptt) % (streams.shape[1] - bptt - 1)
            x, y = streams[:, k:k + bptt], streams[:, k + 1:k + bptt + 1]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, state = model(x, state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if "deferred" in parts:
            ok = torch.isfinite(norm)
            opt.found_inf = (~ok).float()
            opt.step()
            state = tuple(torch.where(ok, s.detach(), 0.0) for s in state)
            run_loss += torch.where(ok, loss.detach(), 0.0)
            bad_run = torch.where(ok, 0.0, bad_run + 1)
        else:
            opt.step()
            state = detach_state(state)
        if bar is not None:
            bar.update(1)
    _sync(device)
    return steps * batch * bptt / (time.perf_counter() - t0)


def ours(model: LanguageModel, ids: np.ndarray, batch: int, bptt: int, steps: int, device,
         amp: bool = False, compile: bool = False) -> float:
    """lstmgen's Trainer for the same number of steps (no validation); returns tokens/s. With `compile`,
    the forward and loss go through torch.compile (compiled during the warm-up steps, not timed)."""
    cfg = TrainConfig(batch_size=batch, bptt=bptt, lr=1e-3, max_steps=steps + 2, warmup_steps=0,
                      log_every=10**9, eval_every=10**9, device=str(device), amp=amp, cpu_amp=amp, compile=compile)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, TokenArray(ids, len(ids)), None, cfg, out)
        # The plot and the final checkpoint happen once per run, not per step: leave them out of the rate.
        trainer.plot = trainer.save_checkpoint = lambda: None
        cfg.max_steps = 2
        trainer.fit()  # warm-up
        cfg.max_steps = steps + 2
        _sync(device)
        t0 = time.perf_counter()
        trainer.fit()
        _sync(device)
    return steps * batch * bptt / (time.perf_counter() - t0)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full sizes (GPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="config names to run")
    ap.add_argument("--amp", action="store_true",
                    help="bf16 autocast in both loops (CUDA; CPUs with native bf16: AVX512-BF16, AMX)")
    ap.add_argument("--compile", action="store_true",
                    help="also lstmgen with torch.compile around the LSTM (TrainConfig.compile), as a third column")
    ap.add_argument("--ablate", action="store_true",
                    help="also the raw loop with the Trainer's data path, NaN check and bookkeeping added one by one")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's top operations of each loop (where lstmgen's time goes)")
    args = ap.parse_args()
    device = pick_device("auto")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.steps} timed steps, best of {args.repeats}"
          f"{'; bf16 autocast' if args.amp else ''}\n")
    extra = " lstmgen compiled tok/s | compiled / raw |" if args.compile else ""
    print(f"| config | batch x bptt | raw loop tok/s | lstmgen tok/s | lstmgen / raw |{extra}")
    print("| --- | --- | --- | --- | --- |" + " --- | --- |" * args.compile)
    for cname, (full, small) in CONFIGS.items():
        if args.only and cname not in args.only:
            continue
        V, L, H, B, T = full if args.full else small
        ids_np = np.random.default_rng(0).integers(0, V, 200_000 if not args.full else 2_000_000).astype(np.int32)
        ids = torch.from_numpy(ids_np.astype(np.int64))
        best_raw = best_ours = best_compiled = 0.0
        for r in range(args.repeats):
            # odd repeats run lstmgen first: neither loop always inherits the other's warm (or hot) device
            for which in ("raw", "ours") if r % 2 == 0 else ("ours", "raw"):
                torch.manual_seed(0)
                m = LanguageModel(LMConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.0))
                if which == "raw":
                    best_raw = max(best_raw, raw_loop(m.to(device), ids, B, T, args.steps, device, args.amp))
                else:
                    best_ours = max(best_ours, ours(m, ids_np, B, T, args.steps, device, args.amp))
            if args.compile:
                torch.manual_seed(0)
                m = LanguageModel(LMConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.0))
                best_compiled = max(best_compiled, ours(m, ids_np, B, T, args.steps, device, args.amp, True))
        extra = f" {best_compiled:,.0f} | {best_compiled / best_raw:.3f} |" if args.compile else ""
        print(f"| {cname} | {B} x {T} | {best_raw:,.0f} | {best_ours:,.0f} | {best_ours / best_raw:.3f} |{extra}",
              flush=True)
        if args.ablate:
            ablate(V, L, H, B, T, ids, args.steps, args.repeats, device, args.amp, best_raw, best_ours)
        if args.profile:
            profile(V, L, H, B, T, ids, ids_np, args.steps, device, args.amp)


def ablate(V: int, L: int, H: int, B: int, T: int, ids, steps: int, repeats: int, device, amp: bool,
           raw: float, ours: float) -> None:
    """The raw loop with the Trainer's pieces added one at a time (best of `repeats` each): the step where
    the rate falls from the raw loop's towards lstmgen's names the piece that costs it."""
    print("\n| raw loop + | tok/s | / raw |\n| --- | --- | --- |")
    added: frozenset = frozenset()
    for part in ("data", "deferred", "loop"):
        added = added | {part}
        best = 0.0
        for _ in range(repeats):
            torch.manual_seed(0)
            m = LanguageModel(LMConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.0)).to(device)
            best = max(best, raw_loop(m, ids, B, T, steps, device, amp, added))
        print(f"| {' + '.join(sorted(added))} | {best:,.0f} | {best / raw:.3f} |")
    print(f"| (lstmgen's Trainer) | {ours:,.0f} | {ours / raw:.3f} |", flush=True)


def profile(V: int, L: int, H: int, B: int, T: int, ids, ids_np, steps: int, device, amp: bool) -> None:
    """Both loops under torch.profiler, side by side: per step, the wall time, the time the device (or on a
    CPU the host) spent in operations, and the operations whose time or count differs most between the
    two loops. That difference is the framework's overhead, named op by op; a wall time well above the busy
    time means the device waited for the host (launches or a synchronisation)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiled

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    on_device = device.type == "cuda"
    rows, summary = {}, []
    for name, fn, data in (("raw", raw_loop, ids), ("lstmgen", ours, ids_np)):
        torch.manual_seed(0)
        m = LanguageModel(LMConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.0))
        if fn is raw_loop:
            m = m.to(device)
        with run_profiled(activities=acts) as prof:
            tok_s = fn(m, data, B, T, steps, device, amp)
        n = steps + 2  # the two warm-up steps are inside the profile too
        events = prof.key_averages()
        # On a GPU an op's self time includes its kernels', which are also rows of their own: count the kernels.
        busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) if on_device \
            else sum(e.self_cpu_time_total for e in events)
        summary.append((name, B * T / tok_s * 1e3, busy / n / 1e3))
        for e in events:
            t = e.self_device_time_total if on_device else e.self_cpu_time_total
            rows.setdefault(e.key, {})[name] = (e.count / n, t / n)
    where = "device" if on_device else "host (in torch ops)"
    print(f"\n| loop | wall ms / step | {where} busy ms / step |\n| --- | --- | --- |")
    for name, wall, busy in summary:
        print(f"| {name} | {wall:.2f} | {busy:.2f} |")
    diff = sorted(rows.items(), key=lambda kv: -abs(kv[1].get("lstmgen", (0, 0))[1] - kv[1].get("raw", (0, 0))[1]))
    print(f"\n| op | calls / step raw | calls / step lstmgen | {where} us / step raw | lstmgen | difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, v in diff[:20]:
        (cr, tr), (co, to) = v.get("raw", (0, 0)), v.get("lstmgen", (0, 0))
        print(f"| {key[:60]} | {cr:.1f} | {co:.1f} | {tr:.0f} | {to:.0f} | {to - tr:+.0f} |")
    extra = sorted(k for k, v in rows.items() if v.get("lstmgen", (0, 0))[0] > v.get("raw", (0, 0))[0] + 0.5)
    print("\nops lstmgen calls more often per step: " + (", ".join(extra) or "none"))


if __name__ == "__main__":
    main()
