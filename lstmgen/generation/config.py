"""GenerationConfig: every decoding option, named as in Hugging Face generate() and the OpenAI API."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Union

from ..errors import UserInputError, check_range
from ..serial import JSONConfig


@dataclass
class GenerationConfig(JSONConfig):
    """Decoding options.

    Args:
        max_new_tokens: the most tokens to generate.
        min_new_tokens: end-of-sequence and stop strings are ignored before this many tokens.
        temperature: softmax temperature; 0 means greedy (always the most likely token).
        top_k: sample only among the k most likely tokens (0 or None: all).
        top_p: nucleus sampling: the smallest set of tokens whose probability reaches p (1.0: all).
        min_p: drop tokens whose probability is below min_p times the top token's (0: off).
        typical_p: locally typical sampling (Meister et al. 2022) with mass p (1.0: off).
        repetition_penalty: divide the logits of tokens already in the text (prompt included) by this
            (multiply negative ones), as in CTRL (Keskar et al. 2019); 1.0: off.
        presence_penalty: subtract this from tokens generated at least once (OpenAI semantics).
        frequency_penalty: subtract this times the count of each generated token (OpenAI semantics).
        no_repeat_ngram_size: never produce an n-gram that is already in the text (0: off).
        dry_multiplier: DRY, "don't repeat yourself" (p-e-w 2024; text-generation-webui, llama.cpp): a token
            that would extend a repeat of the text's last dry_allowed_length or more tokens loses
            dry_multiplier * dry_base ** (repeat length - dry_allowed_length) from its logit (0: off; 0.8 is
            the usual value). Unlike no_repeat_ngram_size it allows short repeats and grows with the length.
        dry_base: the growth of DRY's penalty per token of repeat (> 1).
        dry_allowed_length: repeats up to this many tokens cost nothing.
        dry_penalty_last_n: DRY looks back this many tokens (0: the whole text).
        dry_sequence_breakers: strings that end a repeat (a token whose text holds one is never part of one),
            so that names, line breaks and quotes may recur.
        bad_words: strings that must not appear in the output (banned as token sequences).
        logit_bias: token id -> value added to its logit (OpenAI semantics; ids may be given as strings).
        num_beams: beam search with this many beams (1: sampling or greedy).
        length_penalty: beam scores are sum(logprob) / length ** length_penalty (the generated length, eos
            included; > 0 favours longer sequences).
        early_stopping: when beam search ends, as in Hugging Face: True, once num_beams hypotheses have
            finished; False, once they have and the best running beam, scored at its present length, is no
            better than the worst of them; "never", the same with the running beam scored at max_new_tokens
            when length_penalty > 0 (the canonical search). lstmgen's default is True (Hugging Face's is
            False; most of its seq2seq checkpoints set True).
        num_return_sequences: sequences returned per prompt (<= num_beams in beam search).
        stop: strings that end the output; the text ends just before the first one.
        max_time: seconds after which generation stops (finish_reason "length").
        seed: seeds the sampler: the same model, prompt, options and seed give the same text.
        logprobs: also return the log-probability of every chosen token.
        top_logprobs: also this many most likely tokens at each step, with their log-probabilities
            (0 to 20; more than 0 implies logprobs).
        eos_token_id: the token that ends a sequence (None: none; a character or word model's line break
            is text, not an end).
    """

    max_new_tokens: int = 200
    min_new_tokens: int = 0
    temperature: float = 0.8
    top_k: Optional[int] = None
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 0
    dry_sequence_breakers: List[str] = field(default_factory=lambda: ["\n", ":", "\"", "*"])
    bad_words: List[str] = field(default_factory=list)
    logit_bias: Dict[int, float] = field(default_factory=dict)
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = True
    num_return_sequences: int = 1
    stop: List[str] = field(default_factory=list)
    max_time: Optional[float] = None
    seed: Optional[int] = None
    logprobs: bool = False
    top_logprobs: int = 0
    eos_token_id: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.bad_words, str):
            self.bad_words = [self.bad_words]
        if isinstance(self.dry_sequence_breakers, str):
            self.dry_sequence_breakers = [self.dry_sequence_breakers]
        try:
            self.logit_bias = {int(k): float(v) for k, v in (self.logit_bias or {}).items()}
        except (TypeError, ValueError):
            raise UserInputError("logit_bias maps token ids to numbers, e.g. {\"13\": -100}") from None
        self._whole_numbers()
        check_range("max_new_tokens", self.max_new_tokens, 0)
        check_range("min_new_tokens", self.min_new_tokens, 0)
        check_range("temperature", self.temperature, 0.0)
        check_range("top_k", self.top_k, 0)
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("min_p", self.min_p, 0.0, 1.0)
        check_range("typical_p", self.typical_p, 0.0, 1.0, low_open=True)
        check_range("repetition_penalty", self.repetition_penalty, 0.0, low_open=True)
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        check_range("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        check_range("dry_multiplier", self.dry_multiplier, 0.0)
        check_range("dry_base", self.dry_base, 1.0, low_open=True)
        check_range("dry_allowed_length", self.dry_allowed_length, 1)
        check_range("dry_penalty_last_n", self.dry_penalty_last_n, 0)
        check_range("num_beams", self.num_beams, 1)
        check_range("num_return_sequences", self.num_return_sequences, 1)
        check_range("max_time", self.max_time, 0.0, low_open=True)
        check_range("top_logprobs", self.top_logprobs, 0, 20)
        if isinstance(self.early_stopping, str) and self.early_stopping.lower() in ("true", "false"):
            self.early_stopping = self.early_stopping.lower() == "true"  # as written on a command line
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise UserInputError(f"early_stopping must be true, false or \"never\", got {self.early_stopping!r}")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise UserInputError(f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams "
                                 f"({self.num_beams}) in beam search")
        if any(not s for s in self.stop):
            raise UserInputError("stop strings must not be empty")
        if any(not s for s in self.bad_words):
            raise UserInputError("bad_words must not be empty strings")
        if any(not s for s in self.dry_sequence_breakers):
            raise UserInputError("dry_sequence_breakers must not be empty strings")

    def _whole_numbers(self) -> None:
        """The integer options as ints: 3.0 is taken as 3, 2.5 or "3" or True is an error naming the option
        (not a TypeError deep in the decoder)."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type not in ("int", "Optional[int]") or v is None:
                continue
            if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
                raise UserInputError(f"{f.name} must be a whole number, got {v!r}")
            setattr(self, f.name, int(v))
        if self.top_logprobs and not self.logprobs:  # asking for the alternatives implies the log-probabilities
            self.logprobs = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def updated(self, **options) -> "GenerationConfig":
        """A copy with `options` (None values ignored) applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(options) - known
        if unknown:
            raise UserInputError(f"unknown generation option(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(known))}")
        d = self.to_dict()
        d.update({k: v for k, v in options.items() if v is not None})
        return GenerationConfig(**d)
