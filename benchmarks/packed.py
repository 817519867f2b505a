"""Packed (variable-length) batches on CPU: lstmgen's LSTM against torch's packed path and the padded bound.

The classifier, the tagger, the seq2seq encoder and prompt prefill all run batches of texts of different
lengths as a PackedSequence, so that padding never reaches the state. On CPU torch runs a PackedSequence
through its generic per-step code instead of oneDNN's fused kernel; lstmgen's LSTM splits the time axis
at each distinct length and runs every segment as one fused call (same results). The bound is one fused
call over the padded rectangle: the fused kernel's own speed, over at least as many steps (it also gives
wrong states for the short rows), so lstmgen at 1.0 of it pays nothing for the cutting.

Forward + backward of a 256 -> 512 LSTM, 32 texts of up to 300 tokens:

    python benchmarks/packed.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from lstmgen.nn import LSTM


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--bidirectional", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    B, T = args.batch, args.length
    lstm = LSTM(256, 512, args.layers, batch_first=True, bidirectional=args.bidirectional)
    x = torch.randn(B, T, 256)
    cases = {  # bucketed: what the trainers' length batching gives; spread: any lengths
        "bucketed": torch.full((B,), T) - torch.arange(B) % 8,
        "spread": torch.randint(T // 10, T + 1, (B,)),
    }
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; {args.layers} layer(s) 256 -> 512"
          f"{' bidirectional' if args.bidirectional else ''}, {B} texts of up to {T} tokens, forward + backward, "
          f"best of {args.repeats}\n")
    print("| lengths | one padded call s | lstmgen s | torch packed s | padded / lstmgen "
          "| lstmgen speed-up over torch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, lengths in cases.items():
        def padded() -> None:
            y, _ = lstm(x)
            y.sum().backward()

        def ours() -> None:
            y, _ = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            y.data.sum().backward()

        def torch_packed() -> None:
            y, _ = torch.nn.LSTM.forward(lstm, pack_padded_sequence(x, lengths, batch_first=True,
                                                                    enforce_sorted=False))
            y.data.sum().backward()

        t_pad, t_ours = timed(padded, args.repeats), timed(ours, args.repeats)
        t_torch = timed(torch_packed, 1)  # slow: once is enough
        print(f"| {name} | {t_pad:.3f} | {t_ours:.3f} | {t_torch:.3f} | {t_pad / t_ours:.2f} | "
              f"{t_torch / t_ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
