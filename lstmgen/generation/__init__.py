"""Decoding: options, logits filters and the sampling loop."""
from .sampling import GenerationConfig, filter_logits, sample_tokens

__all__ = ["GenerationConfig", "filter_logits", "sample_tokens"]
