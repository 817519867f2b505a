"""What the Trainer trains: a Task gives it batches, the loss of a batch and the validation figures.

The Trainer owns the loop (budget, schedule, clipping, NaN handling, checkpoints, logs, plots); a task
owns what differs between models. `LMTask` is truncated BPTT over a token stream with the LSTM state
carried between windows; `ClassifyTask` is shuffled, length-bucketed batches of labelled texts.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import StreamBatcher, TokenArray
from ..models import detach_state
from .config import TrainConfig
from .evaluate import stateful_loss, summarize


class LMTask:
    """Language modelling: B contiguous streams cut into windows of bptt tokens, the state carried.

    Args:
        train: training tokens.
        valid: validation tokens (None: no evaluation).
        config: batch_size, bptt, eval_batch_size.
    """

    carries_state = True

    def __init__(self, train: TokenArray, valid: Optional[TokenArray], config: TrainConfig) -> None:
        self.train, self.valid, self.cfg = train, valid, config
        self.batcher = StreamBatcher(train.ids, config.batch_size, config.bptt)

    def __len__(self) -> int:
        return len(self.batcher)

    def batch(self, epoch: int, index: int) -> Tuple[Tensor, ...]:
        return self.batcher.window(index)

    def initial_state(self, model, device):
        return model.init_state(self.cfg.batch_size, device)

    def loss(self, model, batch, state, amp: bool):
        """(loss, the state to carry, tokens scored)."""
        x, y = batch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits, state = model(x, state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        return loss, detach_state(state), y.numel()  # truncated BPTT: keep the values, cut the graph

    def evaluate(self, model, device) -> Dict:
        total, count = stateful_loss(model, self.valid.ids, self.cfg.eval_batch_size, device=device)
        m = summarize(total, count, len(self.valid) / max(self.valid.num_chars, 1))
        return {"valid_loss": m["loss"], "valid_ppl": m["perplexity"], "valid_bpc": m["bpc"]}

    @staticmethod
    def better(record: Dict, best: Optional[Dict]) -> bool:
        return best is None or record["valid_loss"] < best["valid_loss"]

    @staticmethod
    def postfix(record: Dict) -> Dict[str, str]:
        out = {"loss": f"{record['loss']:.3f}", "ppl": f"{math.exp(min(record['loss'], 50)):.2f}"}
        if "valid_loss" in record:
            out["val"] = f"{record['valid_loss']:.3f}"
        return out


def pad_batch(seqs: Sequence[Sequence[int]]) -> Tuple[Tensor, Tensor]:
    """(B, T) ids padded with 0 and the (B,) lengths; padding never reaches the LSTM (packed)."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return ids, lengths


class ClassifyTask:
    """Text classification: each epoch a new seeded shuffle; texts of similar length batched together
    (sorted within pools of 50 batches), so little time goes to padding.

    Args:
        train: (ids, label) pairs.
        valid: (ids, label) pairs (empty: no evaluation).
        config: batch_size, eval_batch_size, seed.
        num_labels: classes; with `binary`, one logit and a sigmoid (the Keras recipe) instead of a softmax.
    """

    carries_state = False

    def __init__(self, train: Sequence[Tuple[List[int], int]], valid: Sequence[Tuple[List[int], int]],
                 config: TrainConfig, num_labels: int, binary: bool = False) -> None:
        self.train, self.valid, self.cfg = list(train), list(valid), config
        self.num_labels, self.binary = num_labels, binary
        self._epoch, self._order = -1, []

    def __len__(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def _batches(self, epoch: int) -> List[List[int]]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(self.train), generator=g).tolist()
        B, pool = self.cfg.batch_size, 50 * self.cfg.batch_size
        batches = []
        for start in range(0, len(perm), pool):
            chunk = sorted(perm[start:start + pool], key=lambda i: len(self.train[i][0]))
            batches += [chunk[k:k + B] for k in range(0, len(chunk), B)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[k] for k in order]

    def batch(self, epoch: int, index: int) -> Tuple[Tensor, ...]:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self._batches(epoch)
        rows = [self.train[i] for i in self._order[index]]
        ids, lengths = pad_batch([r[0] for r in rows])
        return ids, lengths, torch.tensor([r[1] for r in rows])

    def initial_state(self, model, device):
        return None

    def _logits_loss(self, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), y.float(), reduction=reduction)
        return F.cross_entropy(logits.float(), y, reduction=reduction)

    def loss(self, model, batch, state, amp: bool):
        ids, lengths, y = batch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = model(ids, lengths.cpu())
        return self._logits_loss(logits, y), None, int(lengths.sum())

    def predict(self, model, rows: Sequence[Tuple[List[int], int]], device) -> Tuple[Tensor, float]:
        """Predicted labels for `rows` and the summed loss."""
        model.eval()
        preds, total = [], 0.0
        with torch.no_grad():
            for k in range(0, len(rows), self.cfg.eval_batch_size * 8):
                chunk = rows[k:k + self.cfg.eval_batch_size * 8]
                ids, lengths = pad_batch([r[0] for r in chunk])
                y = torch.tensor([r[1] for r in chunk], device=device)
                logits = model(ids.to(device), lengths)
                total += float(self._logits_loss(logits, y, "sum"))
                preds.append((logits.squeeze(-1) > 0).long() if self.binary else logits.argmax(-1))
        return torch.cat(preds).cpu(), total

    def evaluate(self, model, device) -> Dict:
        from .metrics import classification_report

        pred, total = self.predict(model, self.valid, device)
        gold = torch.tensor([r[1] for r in self.valid])
        rep = classification_report(gold, pred, self.num_labels)
        return {"valid_loss": total / len(self.valid), "valid_accuracy": rep["accuracy"],
                "valid_macro_f1": rep["macro_f1"]}

    @staticmethod
    def better(record: Dict, best: Optional[Dict]) -> bool:
        if best is None:
            return True
        return (record["valid_accuracy"], -record["valid_loss"]) > (best["valid_accuracy"], -best["valid_loss"])

    @staticmethod
    def postfix(record: Dict) -> Dict[str, str]:
        out = {"loss": f"{record['loss']:.3f}"}
        if "valid_accuracy" in record:
            out["val_acc"] = f"{record['valid_accuracy']:.4f}"
        return out
