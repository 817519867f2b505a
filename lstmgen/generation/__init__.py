"""Decoding: options, logits processors, the engine (sampling, greedy, beam search) and text assembly."""
from .beam import BeamSearch, beam_search, lm_beam_search
from .blocks import BlockCache
from .config import GenerationConfig
from .engine import Row, SamplingDecoder
from .jobs import BeamJob, TextJob
from .prefill import DecoderState, SequenceOutput, prefill
from .processors import History, TokenRules, apply_processors, warp
from .text import GeneratedText, TextAssembler

__all__ = ["BlockCache", "GenerationConfig", "DecoderState", "Row", "SamplingDecoder", "SequenceOutput", "beam_search",
           "BeamSearch", "lm_beam_search", "BeamJob",
           "prefill", "TextJob", "History", "TokenRules", "apply_processors", "warp", "GeneratedText", "TextAssembler"]
