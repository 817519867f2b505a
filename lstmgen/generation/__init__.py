"""Decoding: options, logits processors, the engine (sampling, greedy, beam search) and text assembly."""
from .config import GenerationConfig
from .engine import DecoderState, SamplingDecoder, SequenceOutput, beam_search, prefill
from .processors import History, build_processors, warp
from .text import GeneratedText, TextAssembler

__all__ = ["GenerationConfig", "DecoderState", "SamplingDecoder", "SequenceOutput", "beam_search", "prefill",
           "History", "build_processors", "warp", "GeneratedText", "TextAssembler"]
