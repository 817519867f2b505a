"""Classification metrics: accuracy, per-class and macro F1, the confusion matrix."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


def confusion_matrix(gold: Tensor, pred: Tensor, num_labels: int) -> Tensor:
    """(num_labels, num_labels) counts: row = true label, column = predicted label."""
    return torch.bincount(gold.long() * num_labels + pred.long(), minlength=num_labels * num_labels).view(
        num_labels, num_labels)


def classification_report(gold: Tensor, pred: Tensor, num_labels: int) -> Dict:
    """Accuracy, macro-F1 (the unweighted mean of the F1 of the classes that occur, in the gold labels or
    the predictions, as scikit-learn counts them: a class absent from both is no error), per-class
    precision/recall/F1 and the confusion matrix (as lists, so the result is JSON)."""
    cm = confusion_matrix(gold, pred, num_labels).double()
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    occurs = (cm.sum(0) + cm.sum(1)) > 0
    macro = float(f1[occurs].mean()) if occurs.any() else 0.0
    return {"accuracy": float(tp.sum() / cm.sum().clamp(min=1)), "macro_f1": macro,
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "confusion": cm.long().tolist()}
