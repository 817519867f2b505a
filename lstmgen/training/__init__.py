"""Training: the Trainer, its config, checkpoints, metrics and plots."""
from .checkpoint import CHECKPOINT, LOG, check_same_model, prepare_out
from .config import TrainConfig
from .evaluate import evaluate_lm, stateful_loss, windowed_loss
from .trainer import Trainer, lr_at, pick_device

__all__ = ["TrainConfig", "evaluate_lm", "stateful_loss", "windowed_loss", "CHECKPOINT", "LOG", "Trainer",
           "lr_at", "pick_device", "prepare_out", "check_same_model"]
