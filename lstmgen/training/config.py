"""TrainConfig: everything the Trainer needs besides the model and the data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import UserInputError, check_range
from ..serial import JSONConfig

OPTIMIZERS = ("adamw", "sgd", "rmsprop", "ntasgd", "asgd")
SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig(JSONConfig):
    """Training settings. The defaults are the tuned tinyshakespeare character-level recipe.

    Args:
        batch_size: parallel streams per step (B).
        bptt: window length of truncated backpropagation through time (T).
        lr: peak learning rate.
        optimizer: "adamw", "sgd", "rmsprop" (Keras' defaults: rho 0.9, eps 1e-7), "ntasgd" (AWD-LSTM's
            non-monotonically triggered averaged SGD: SGD until the validation loss stops improving, then
            the weights are averaged from there on) or "asgd" (averaged from the first step: AWD-LSTM's
            fine-tuning stage).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        momentum: SGD momentum.
        beta1 / beta2: AdamW's decay rates of its gradient mean and square estimates. beta1 = 0 (no
            momentum, as in RMSProp) is what Melis et al. (2018, 2019) trained their LSTM language models
            with.
        warmup_steps: linear warm-up from 0 to lr.
        schedule: "cosine" (down to min_lr_ratio * lr at the end of the budget) or "constant".
        min_lr_ratio: the cosine schedule's floor as a fraction of lr.
        clip: gradient-norm clipping threshold (0 disables).
        max_steps / max_epochs / max_minutes: the budget; training ends at whichever comes first, and the
            cosine schedule follows the same fraction. With none set, 10 epochs.
        eval_every: steps between validation runs (and checkpoints).
        checkpoint_every: steps between checkpoints when they should be rarer than validations (None: at
            every validation). A checkpoint holds the weights, the best weights and the optimizer's moments:
            for a large model in a budget of minutes, writing one at every validation costs seconds each.
            The end of training, early stopping and Ctrl-C always write one.
        eval_batch_size: streams used for the validation loss.
        patience: stop after this many validations without improvement (None: never).
        log_every: steps between log lines.
        seed: seeds torch's generators.
        device: "auto" (cuda > mps > cpu), or a torch device string.
        amp: bf16 autocast on CUDA.
        cpu_amp: bf16 autocast on the CPU too (with amp), for CPUs with bf16 arithmetic (AVX512-BF16, AMX).
            Measured on a Zen 4 EPYC, one thread: 1.4-1.7x the float32 tokens/s for LSTMs of 512 to 1150
            units at 1,000+ tokens per step, but 0.7-0.9x for 2 x 2048; so off unless asked for.
        compile: a language model's parts around the LSTM (embedding and its dropouts, output dropout
            and layer, softmax cross-entropy, AR/TAR) run through torch.compile, which fuses their
            elementwise work; the LSTM stays cuDNN's / oneDNN's kernel. The first steps pay the
            compilation (seconds to a minute).
        max_bad_steps: after this many steps in a row with a NaN/inf loss or gradient (each one skipped),
            roll back to the last checkpoint and halve the learning rate.
        nonmono: NT-ASGD starts averaging when the validation loss is worse than the best of the
            validations before the last `nonmono` ones (AWD-LSTM: 5).
        ar / tar: activation and temporal activation regularization of a language model (AWD-LSTM: 2, 1).
        variable_bptt: draw each window's length around bptt (AWD-LSTM, section 4.1: bptt with probability
            0.95, else bptt / 2, then N(that, 5)), so windows start at ever new places; the loss (so the
            SGD step) is scaled by length / bptt.
        discriminative_lr: for a model with layer groups (a classifier made from a language model), each
            group trains at the learning rate of the one above it divided by this (ULMFiT: 2.6; 1: off).
        gradual_unfreezing: train only the top layer group in the first epoch, one more each epoch after
            (ULMFiT, section 3.3).
    """

    batch_size: int = 32
    bptt: int = 128
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.1
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    clip: float = 1.0
    max_steps: Optional[int] = None
    max_epochs: Optional[float] = None
    max_minutes: Optional[float] = None
    eval_every: int = 250
    checkpoint_every: Optional[int] = None
    eval_batch_size: int = 10
    patience: Optional[int] = None
    log_every: int = 25
    seed: int = 1337
    device: str = "auto"
    amp: bool = True
    cpu_amp: bool = False
    compile: bool = False
    max_bad_steps: int = 5
    nonmono: int = 5
    ar: float = 0.0
    tar: float = 0.0
    variable_bptt: bool = False
    discriminative_lr: float = 1.0
    gradual_unfreezing: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "bptt", "eval_every", "eval_batch_size", "log_every", "max_bad_steps"):
            check_range(name, getattr(self, name), 1)
        check_range("lr", self.lr, 0.0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("clip", self.clip, 0.0)
        check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("max_steps", self.max_steps, 1)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        check_range("max_epochs", self.max_epochs, 0.0, low_open=True)
        check_range("max_minutes", self.max_minutes, 0.0, low_open=True)
        check_range("patience", self.patience, 1)
        check_range("nonmono", self.nonmono, 1)
        check_range("ar", self.ar, 0.0)
        check_range("tar", self.tar, 0.0)
        check_range("discriminative_lr", self.discriminative_lr, 1.0)
        for name in ("beta1", "beta2"):
            check_range(name, getattr(self, name), 0.0, 1.0)
            if getattr(self, name) >= 1.0:
                raise UserInputError(f"{name} must be < 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserInputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UserInputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.max_steps is None and self.max_epochs is None and self.max_minutes is None:
            self.max_epochs = 10

