"""Decoding: options, logits processors, the engine (sampling, greedy, beam search) and text assembly."""
from .blocks import BlockCache
from .config import GenerationConfig
from .engine import (
           DecoderState,
           Row,
           SamplingDecoder,
           SequenceOutput,
           beam_search,
           prefill,
)
from .jobs import TextJob
from .processors import History, apply_processors, warp
from .text import GeneratedText, TextAssembler

__all__ = ["BlockCache", "GenerationConfig", "DecoderState", "Row", "SamplingDecoder", "SequenceOutput", "beam_search",
           "prefill", "TextJob", "History", "apply_processors", "warp", "GeneratedText", "TextAssembler"]
