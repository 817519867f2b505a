"""Training checkpoints as one safetensors file: weights, optimizer state, carried LSTM state, RNG state.

No pickle anywhere: tensors go in the safetensors body and everything else (step, epoch, optimizer
hyper-parameters) in its JSON metadata. The file is written atomically (temporary file, fsync, rename), so
a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_path
from ..errors import UserInputError
from ..serial import tied_aliases
from .averaging import WeightAverage
from .distributed import barrier, gather_rows

CHECKPOINT = "checkpoint.safetensors"
LOG = "training_log.jsonl"
# What a pipeline's config.json says about the model itself (the rest is the run's information): a run
# resumed with other settings or data would load its checkpoint into another model.
STRUCTURE_KEYS = ("model", "labels", "prep", "chars", "text_task", "max_source_tokens", "shared_vocab")


def prepare_out(out: Path, resume: bool) -> None:
    """Refuse to mix runs, and find an unwritable folder before any training time is spent; a new run
    starts a new log (the Trainer appends to it).

    Args:
        out: the run's folder (made if missing).
        resume: the run continues the checkpoint in `out`.
    """
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; give a folder")
    if (out / CHECKPOINT).exists() and not resume:
        raise UserInputError(f"{out} holds a training run; pass --resume to continue it, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # a real write: permissions, read-only mounts, quotas
            pass
    except OSError as e:
        raise UserInputError(f"cannot write to --out {out} ({e.strerror}); choose another folder") from None
    if not resume:
        (out / LOG).unlink(missing_ok=True)


def check_same_model(out: Path, config: Dict, tokenizers: Dict[str, str]) -> None:
    """Before resuming: the model that the settings and data make now must be the one in `out` (its
    config.json and tokenizer files, written at the first evaluation), else one line naming what differs.

    Args:
        out: the run's folder.
        config: the new pipeline's config_dict().
        tokenizers: file name -> the text the new pipeline writes there (its vocabularies).
    """
    path = out / "config.json"
    if not path.is_file():
        return  # stopped before its first evaluation: the checkpoint's shapes are checked when loaded
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(config))  # tuples -> lists, as saved
    differ = []
    for key in STRUCTURE_KEYS:
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            differ.append(key)
    differ += [f"another vocabulary than {name}'s" for name, text in tokenizers.items()
               if (out / name).is_file() and (out / name).read_text(encoding="utf-8") != text]
    if differ:
        raise UserInputError(f"--resume continues the run in {out} as it was made, but these settings and data "
                             f"make another model ({'; '.join(differ)}); give the run's own settings, or choose "
                             "another --out")


def atomic_save_tensors(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """save_file through a temporary file, fsync and rename."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], str]:
    """Flatten an optimizer state dict into named tensors plus JSON for the rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], meta: str) -> None:
    info = json.loads(meta)
    state: Dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in info["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def load_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and metadata of a checkpoint file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta


class Checkpointing:
    """The Trainer's checkpoint and resume (a mixin: it reads and sets the Trainer's model, optimizer,
    counters, carried state, best weights and weight average)."""

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly from here, in one atomically written file.

        Weights with a NaN or inf are never saved: the previous checkpoint stays.
        """
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            tqdm.write("lstmgen: weights are not finite; checkpoint not written (the previous one stays)",
                       file=sys.stderr)
            return
        # Every rank's carried state, in rank order (a collective: all ranks are here).
        states = None if self.state is None else tuple(gather_rows(self.dist, t) for t in self.state)
        if not self.dist.main:
            barrier(self.dist)  # the others go on once rank 0 has written the file
            return
        aliases = tied_aliases(self.model)  # a tied weight is stored once
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items() if k not in aliases}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items() if k not in aliases})
        opt_tensors, opt_meta = optimizer_to_tensors(self.opt)
        tensors.update(opt_tensors)
        if states is not None:
            tensors["state.h"], tensors["state.c"] = states
        if self.avg is not None:
            tensors.update({f"avg.{k}": v for k, v in self.avg.mean.items()})
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"trainer": json.dumps({"step": self.step, "window": self.window, "epoch": self.epoch,
                                       "elapsed": self.elapsed, "best": self.best, "bad_evals": self.bad_evals,
                                       "lr_scale": self.lr_scale,
                                       "avg_n": self.avg.count if self.avg is not None else 0,
                                       "world": self.dist.world, "windows": len(self.task),
                                       "val_history": self.val_history, "config": self.cfg.to_dict()}),
                "optimizer": opt_meta}
        atomic_save_tensors(self.out / CHECKPOINT, tensors, meta)
        barrier(self.dist)

    def continue_run(self, resume: bool) -> None:
        """With `resume`, continue from the checkpoint in out_dir, or say that there is none to continue."""
        if resume and not self.resume() and self.dist.main:
            tqdm.write(f"lstmgen: no checkpoint in {self.out}; starting a new run", file=sys.stderr)

    def resume(self) -> bool:
        """Continue from out_dir's checkpoint if there is one; returns whether it did."""
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        tensors, meta = load_checkpoint(path)
        info = json.loads(meta["trainer"])

        def weights(prefix: str) -> Dict[str, torch.Tensor]:
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            for alias, name in tied_aliases(self.model).items():
                sd[alias] = sd[name]
            return sd

        try:
            self.model.load_state_dict(weights("model."))
        except RuntimeError as e:  # missing keys or other shapes: the run was made with other settings
            first = str(e).strip().splitlines()[-1].strip()
            raise UserInputError(f"{path} holds another model than these settings make ({first}); resume with "
                                 "the run's own settings, or choose another --out") from None
        if any(k.startswith("best.") for k in tensors):
            self.best_state = {k: v.to(self.device) for k, v in weights("best.").items()}
        optimizer_from_tensors(self.opt, tensors, meta["optimizer"])
        self.step, self.window, self.epoch = info["step"], info["window"], info["epoch"]
        world = info.get("world", 1)
        if "state.h" in tensors and world == self.dist.world:  # this rank's rows of the carried state
            B = tensors["state.h"].shape[1] // world
            rows = slice(self.dist.rank * B, (self.dist.rank + 1) * B)
            self.state = (tensors["state.h"][:, rows].to(self.device), tensors["state.c"][:, rows].to(self.device))
        elif world != self.dist.world:
            # Another world size cuts the text into other shards: continue at the same fraction of the
            # epoch, from a zero state (the state of other streams means nothing here).
            self.window = int(info["window"] / max(info.get("windows", len(self.task)), 1) * len(self.task))
            self.state = self.task.initial_state(self.model, self.device)
            tqdm.write(f"lstmgen: resuming with {self.dist.world} processes instead of {world}: the carried LSTM "
                       "state starts from zero", file=sys.stderr)
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.elapsed, self.best, self.bad_evals = info["elapsed"], info["best"], info["bad_evals"]
        self.lr_scale = info.get("lr_scale", 1.0)
        self.val_history = info.get("val_history", [])
        if any(k.startswith("avg.") for k in tensors):
            mean = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("avg.")}
            self.avg = WeightAverage(self.model, mean, info.get("avg_n", 1))
        if self.dist.main:
            self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint, so a resumed log has each step once."""
        path = self.out / LOG
        if path.exists():
            keep: List[str] = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        keep.append(line)
                except (ValueError, KeyError, TypeError):  # a line cut short by a crash mid-write
                    continue
            path.write_text("".join(ln + "\n" for ln in keep))
