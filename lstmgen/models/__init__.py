"""Task models: each a config dataclass and an nn.Module."""
from .classifier import ClassifierConfig, TextClassifierModel
from .lm import LanguageModel, LMConfig, detach_state

__all__ = ["LanguageModel", "LMConfig", "detach_state", "ClassifierConfig", "TextClassifierModel"]
