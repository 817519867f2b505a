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
from ..nn.regularizers import activation_penalties
from .config import TrainConfig
from .evaluate import stateful_loss, summarize


class LMTask:
    """Language modelling: B contiguous streams cut into windows of bptt tokens, the state carried.

    Args:
        train: training tokens.
        valid: validation tokens (None: no evaluation).
        config: batch_size, bptt, eval_batch_size.
        rank / world: this process's shard of the stream under distributed training.
    """

    carries_state = True

    def __init__(self, train: TokenArray, valid: Optional[TokenArray], config: TrainConfig, rank: int = 0,
                 world: int = 1) -> None:
        self.train, self.valid, self.cfg = train, valid, config
        self.batcher = StreamBatcher(train.ids, config.batch_size, config.bptt, rank, world)
        self._epoch, self._windows = -1, None
        if config.variable_bptt:
            self._schedule(0)
        # With compile, the softmax cross-entropy and AR/TAR become fused kernels (float cast, log-softmax
        # and the gather in one pass over the logits, and their backward in another). A second window
        # length (variable BPTT, an epoch's short last window) recompiles once, symbolic in the length.
        self._loss = torch.compile(lm_loss) if config.compile else lm_loss

    def _schedule(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._epoch, self._windows = epoch, self.batcher.variable_windows(self.cfg.seed * 1000 + epoch)

    def __len__(self) -> int:
        return len(self._windows) if self._windows is not None else len(self.batcher)

    def to_device(self, device) -> bool:
        """Keep the training streams on the GPU when they fit (windows become slices there)."""
        return self.batcher.to_device(device)

    def batch(self, epoch: int, index: int) -> Tuple[Tensor, ...]:
        if not self.cfg.variable_bptt:
            return self.batcher.window(index)
        self._schedule(epoch)
        return self.batcher.span(*self._windows[index])

    def initial_state(self, model, device):
        return model.init_state(self.cfg.batch_size, device)

    def loss(self, model, batch, state, amp: bool):
        """(loss to minimize, the state to carry, tokens scored, the cross-entropy to log)."""
        x, y = batch
        c = self.cfg
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, state, return_hidden=bool(c.ar or c.tar))
        loss, ce = self._loss(out[0], y, out[2] if c.ar or c.tar else None, c.ar, c.tar)
        if c.variable_bptt:  # a shorter window takes a smaller step (AWD-LSTM scales the learning rate)
            loss = loss * (x.shape[1] / c.bptt)
        return loss, detach_state(out[1]), y.numel(), ce.detach()  # truncated BPTT: keep values, cut the graph

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


def lm_loss(logits: Tensor, y: Tensor, hidden: Optional[Tuple[Tensor, Tensor]], ar: float, tar: float):
    """(the loss to minimize, the cross-entropy): next-token cross-entropy in float32, plus AR/TAR on the
    last layer's output (`hidden`: before and after its dropout) when given."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    return (ce + activation_penalties(*hidden, ar, tar) if hidden is not None else ce), ce


def length_buckets(lengths: Sequence[int], batch_size: int, seed: int) -> List[List[int]]:
    """Batches of example indices for one epoch: a seeded shuffle, then sorted by length within pools
    of 50 batches (little padding), then the batches in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    pool = 50 * batch_size
    batches = []
    for start in range(0, len(perm), pool):
        chunk = sorted(perm[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]


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

    def batch(self, epoch: int, index: int) -> Tuple[Tensor, ...]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = length_buckets([len(r[0]) for r in self.train], self.cfg.batch_size,
                                         self.cfg.seed * 1000 + epoch)
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
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=amp):
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


class TagTask:
    """Sequence tagging with a CRF: shuffled, length-bucketed batches of sentences; validation is
    entity-level F1 (conlleval's rules).

    Args:
        train: (word ids, char ids per word, tag ids) per sentence.
        valid: the same for validation.
        config: batch_size, eval_batch_size, seed.
        tags: the tag names.
        singletons: word ids seen once in training; each becomes <unk> with probability 0.5 in a training
            batch, so the model learns what to do with words it has never seen (Lample et al. 2016).
        unk_id: the word <unk>.
    """

    carries_state = False

    def __init__(self, train, valid, config: TrainConfig, tags: List[str], singletons=frozenset(),
                 unk_id: int = 0) -> None:
        self.train, self.valid, self.cfg, self.tags = list(train), list(valid), config, tags
        self.singletons, self.unk_id = singletons, unk_id
        self._epoch, self._order = -1, []

    def __len__(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def batch(self, epoch: int, index: int):
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = length_buckets([len(r[0]) for r in self.train], self.cfg.batch_size,
                                         self.cfg.seed * 1000 + epoch)
            self._rng = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        rows = [self.train[i] for i in self._order[index]]
        words, chars, char_lengths, lengths, tags = tag_batch(rows)
        if self.singletons:
            single = torch.tensor([[w in self.singletons for w in r] for r in words.tolist()])
            drop = single & (torch.rand(words.shape, generator=self._rng) < 0.5)
            words = words.masked_fill(drop, self.unk_id)
        return words, chars, char_lengths, lengths, tags

    def initial_state(self, model, device):
        return None

    def loss(self, model, batch, state, amp: bool):
        words, chars, char_lengths, lengths, tags = batch
        return model.loss(words, chars, char_lengths, lengths, tags), None, int(lengths.sum())

    def predict(self, model, rows, device) -> List[List[str]]:
        model.eval()
        out: List[List[str]] = []
        with torch.no_grad():
            for k in range(0, len(rows), 64):
                words, chars, char_lengths, lengths, _ = tag_batch(rows[k:k + 64])
                paths = model.decode(words.to(device), chars.to(device), char_lengths.to(device), lengths)
                out += [[self.tags[t] for t in p] for p in paths]
        return out

    def evaluate(self, model, device) -> Dict:
        from ..data.conll import span_f1

        pred = self.predict(model, self.valid, device)
        gold = [[self.tags[t] for t in r[2]] for r in self.valid]
        m = span_f1(gold, pred)
        return {"valid_f1": m["f1"], "valid_precision": m["precision"], "valid_recall": m["recall"]}

    @staticmethod
    def better(record: Dict, best: Optional[Dict]) -> bool:
        return best is None or record["valid_f1"] > best["valid_f1"]

    @staticmethod
    def postfix(record: Dict) -> Dict[str, str]:
        out = {"loss": f"{record['loss']:.3f}"}
        if "valid_f1" in record:
            out["val_f1"] = f"{record['valid_f1']:.4f}"
        return out


def tag_batch(rows):
    """Padded (words (B, L), chars (B, L, C), char lengths (B, L), lengths (B,), tags (B, L))."""
    B = len(rows)
    L = max(len(r[0]) for r in rows)
    C = max(len(c) for r in rows for c in r[1])
    words = torch.zeros(B, L, dtype=torch.long)
    chars = torch.zeros(B, L, C, dtype=torch.long)
    char_lengths = torch.zeros(B, L, dtype=torch.long)
    tags = torch.zeros(B, L, dtype=torch.long)
    for b, (w, cs, t) in enumerate(rows):
        words[b, :len(w)] = torch.as_tensor(w)
        tags[b, :len(t)] = torch.as_tensor(t)
        for i, c in enumerate(cs):
            chars[b, i, :len(c)] = torch.as_tensor(c)
            char_lengths[b, i] = len(c)
    return words, chars, char_lengths, torch.tensor([len(r[0]) for r in rows]), tags


class Seq2SeqTask:
    """Sequence to sequence with teacher forcing: shuffled batches of pairs with similar source lengths;
    the target is fed as <s> y_1 .. y_n and predicted as y_1 .. y_n </s>.

    The loss per target token is label-smoothed cross-entropy (Szegedy et al. 2016): (1 - eps) times the
    gold token's negative log-probability plus eps times the mean over the vocabulary; with coverage,
    `coverage_weight` times See et al.'s coverage loss is added. Padding is masked out of both.

    Args:
        train: (source ids, target ids) pairs, without <s> / </s>.
        valid: the same for validation.
        config: batch_size, seed.
        bos_id / eos_id: the target's <s> and </s>.
        label_smoothing: eps.
        coverage_weight: lambda of the coverage loss.
        scorer: called with the model at each validation; returns extra figures (BLEU on a sample, ...).
        select: the record key that picks the kept weights: "valid_loss" (lowest), or a scorer figure
            such as "valid_bleu" or "valid_rouge2" (highest).
    """

    carries_state = False

    def __init__(self, train, valid, config: TrainConfig, bos_id: int, eos_id: int, label_smoothing: float = 0.1,
                 coverage_weight: float = 1.0, scorer=None, select: str = "valid_loss") -> None:
        self.train, self.valid, self.cfg = list(train), list(valid), config
        self.bos, self.eos, self.eps, self.cov_w = bos_id, eos_id, label_smoothing, coverage_weight
        self.scorer, self.select = scorer, select
        self._epoch, self._order = -1, []

    def __len__(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def collate(self, rows) -> Tuple[Tensor, ...]:
        """(src (B, S), src lengths (B,), target in (B, T), target out (B, T), target lengths (B,))."""
        src, src_len = pad_batch([r[0] for r in rows])
        tgt_in, tgt_len = pad_batch([[self.bos] + list(r[1]) for r in rows])
        tgt_out, _ = pad_batch([list(r[1]) + [self.eos] for r in rows])
        return src, src_len, tgt_in, tgt_out, tgt_len

    def batch(self, epoch: int, index: int) -> Tuple[Tensor, ...]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = length_buckets([len(r[0]) for r in self.train], self.cfg.batch_size,
                                         self.cfg.seed * 1000 + epoch)
        return self.collate([self.train[i] for i in self._order[index]])

    def initial_state(self, model, device):
        return None

    def _losses(self, model, batch, amp: bool) -> Tuple[Tensor, Tensor, int]:
        """(training loss summed over target tokens, negative log-likelihood summed, tokens)."""
        src, src_len, tgt_in, tgt_out, tgt_len = batch
        with torch.autocast(src.device.type, dtype=torch.bfloat16, enabled=amp):
            logp, _, cov = model(src, src_len, tgt_in)
        mask = (torch.arange(tgt_in.shape[1], device=tgt_in.device)[None, :] < tgt_len.to(tgt_in.device)[:, None])
        nll = -logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
        loss = (1 - self.eps) * nll + self.eps * -logp.mean(-1) if self.eps else nll
        if cov is not None:
            loss = loss + self.cov_w * cov.float()
        m = mask.float()
        return (loss * m).sum(), (nll * m).sum(), int(tgt_len.sum())

    def loss(self, model, batch, state, amp: bool):
        total, _, n = self._losses(model, batch, amp)
        return total / max(n, 1), None, n

    def evaluate(self, model, device) -> Dict:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(self.valid), 64):
                batch = [t.to(device) for t in self.collate(self.valid[k:k + 64])]
                _, nll, n = self._losses(model, batch, False)
                total, count = total + float(nll), count + n
        loss = total / max(count, 1)
        record = {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50))}
        if self.scorer is not None:
            record.update(self.scorer(model))
        return record

    def better(self, record: Dict, best: Optional[Dict]) -> bool:
        """Lower validation loss, or with `select` a higher figure of the scorer (ties: lower loss)."""
        if best is None:
            return True
        key = self.select
        if key == "valid_loss" or key not in record:
            return record["valid_loss"] < best["valid_loss"]
        return (record[key], -record["valid_loss"]) > (best.get(key, float("-inf")), -best["valid_loss"])

    @staticmethod
    def postfix(record: Dict) -> Dict[str, str]:
        out = {"loss": f"{record['loss']:.3f}"}
        if "valid_loss" in record:
            out["val"] = f"{record['valid_loss']:.3f}"
        for k in ("valid_bleu", "valid_rouge2", "valid_exact_match"):
            if k in record:
                out[k[6:]] = f"{record[k]:.2f}"
        return out
