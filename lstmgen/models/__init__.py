"""Task models: each a config dataclass and an nn.Module."""
from .lm import LanguageModel, LMConfig, detach_state

__all__ = ["LanguageModel", "LMConfig", "detach_state"]
