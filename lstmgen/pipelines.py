"""Pipelines: a model, its tokenizer and its defaults, saved and loaded as one folder (folder.py).

TextGenerator is the language model's pipeline (generate, stream, score); `load` opens any model folder
with the pipeline its config.json names (text generation, classification, tagging, translation).
"""
from __future__ import annotations

import json
import numbers
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch

from . import __version__, chat
from .errors import ModelFolderError, UserInputError, as_texts
from .folder import (
    load_weights,
    open_folder,
    read_json,
    resolve_model_dir,
    save_folder,
)
from .generation import (
    BeamJob,
    BlockCache,
    DecoderState,
    GeneratedText,
    GenerationConfig,
    SamplingDecoder,
    TextJob,
    TokenRules,
)
from .models import LanguageModel, LMConfig
from .tokenizers import Tokenizer
from .training import pick_device

MODEL_TYPE = "lstm-lm"
PROMPT_FORMS = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"


class TextGenerator:
    """A language model with its tokenizer: generate, stream, save and load.

    Args:
        model: the LanguageModel.
        tokenizer: its tokenizer.
        generation_config: default decoding options.
        info: the rest of config.json (data, training, metrics), kept for the model card.
    """

    task = "text-generation"

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer,
                 generation_config: Optional[GenerationConfig] = None, info: Optional[dict] = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.generation_config = generation_config or GenerationConfig()
        self.info = info or {}
        self.chat_template: Optional[str] = None  # Jinja; None: chat.DEFAULT_TEMPLATE (a transcript)
        self._blocks: Dict[str, BlockCache] = {}  # per device type: graphs captured once, not per call
        self._blocks_lock = threading.Lock()
        self._pieces: Optional[List[str]] = None  # each token's text, decoded once when DRY first needs it
        self._breaker_sets: Dict[Tuple[str, ...], frozenset] = {}

    # -- generation --------------------------------------------------------------------------------
    @contextmanager
    def _decoder(self) -> Iterator[SamplingDecoder]:
        """A decoder for one generate()/stream() call. It shares this pipeline's captured blocks unless
        another call (from another thread) is using them: a block's buffers serve one batch at a time."""
        device = next(self.model.parameters()).device.type
        shared = self._blocks_lock.acquire(blocking=False)
        try:
            cache = self._blocks.setdefault(device, BlockCache(graph=device == "cuda")) if shared else None
            yield SamplingDecoder(self.model, blocks=cache)
        finally:
            if shared:
                self._blocks_lock.release()

    def _prompts(self, prompt) -> Tuple[List[str], Optional[List[List[int]]], bool]:
        """(texts, token ids or None, whether one prompt was given) of a prompt argument in the OpenAI API's
        forms: a string, a list of strings, a list of token ids (one prompt) or a list of such lists. Token
        ids are used as given (byte-level BPE can spell one text several ways, and a cut may fall inside a
        character); their text is what they decode to. Arrays and tensors of ids count as lists."""
        if hasattr(prompt, "tolist") and not isinstance(prompt, str):
            prompt = prompt.tolist()
        if isinstance(prompt, (list, tuple)) and prompt and not any(isinstance(p, str) for p in prompt):
            one = all(_is_id(i) for i in prompt)
            lists = [list(prompt)] if one else prompt
            if not all(isinstance(ids, (list, tuple)) and all(_is_id(i) for i in ids) for ids in lists):
                raise UserInputError(PROMPT_FORMS)
            V = self.tokenizer.vocab_size
            if any(not 0 <= i < V for ids in lists for i in ids):
                raise UserInputError(f"prompt token ids must be in [0, {V})")
            ids = [[int(i) for i in x] for x in lists]
            return [self.tokenizer.decode(x) for x in ids], ids, one
        try:
            return as_texts(prompt, "prompt"), None, isinstance(prompt, str)
        except UserInputError:
            raise UserInputError(f"{PROMPT_FORMS}, got {type(prompt).__name__}") from None

    def _prompt_ids(self, prompt: str, state: Optional[DecoderState] = None,
                    given: Optional[List[int]] = None) -> List[int]:
        if state is not None and not isinstance(state, DecoderState):
            raise UserInputError(f"state must be a result's .state (a DecoderState), got {type(state).__name__}")
        ids = list(given) if given is not None else self.tokenizer.encode(prompt)
        if ids or (state is not None and state.pending):
            return ids
        # An empty prompt starts after a line break, as if at the top of a new paragraph.
        nl = self.tokenizer.eos_id if self.tokenizer.kind == "word" else None
        nl = nl if nl is not None else (self.tokenizer.encode("\n") or [0])[0]
        return [nl]

    def _setup(self, options: dict) -> Tuple[GenerationConfig, TokenRules]:
        """The options with the model's defaults, and what they mean in tokens: the sequences they ban (bad
        words, <unk>) and, with DRY, the tokens that break a repeat."""
        cfg = self.generation_config.updated(**options)
        bans = [tuple(ids) for w in cfg.bad_words for ids in self._word_variants(w)]
        if self.tokenizer.unk_id is not None:
            bans.append((self.tokenizer.unk_id,))
        breakers = self._breakers(tuple(cfg.dry_sequence_breakers)) if cfg.dry_multiplier else frozenset()
        return cfg, TokenRules(tuple(bans), breakers)

    def _breakers(self, strings: Tuple[str, ...]) -> frozenset:
        """The tokens whose text holds one of `strings` (DRY's sequence breakers); worked out once per set
        of strings, as a 50k vocabulary takes a few milliseconds each time."""
        if strings not in self._breaker_sets:
            if self._pieces is None:
                self._pieces = [self.tokenizer.decode([i]) for i in range(self.tokenizer.vocab_size)]
            self._breaker_sets[strings] = frozenset(i for i, piece in enumerate(self._pieces)
                                                    if any(s in piece for s in strings))
        return self._breaker_sets[strings]

    def new_job(self, decoder: SamplingDecoder, prompts: List[str], options: dict,
                states: Optional[List[Optional[DecoderState]]] = None,
                prompt_ids: Optional[List[List[int]]] = None) -> TextJob:
        """Start `prompts` (one row each) on `decoder`, sampling or greedy; the server's entry point.

        Args:
            decoder: a SamplingDecoder over this model.
            prompts: the texts to continue.
            options: GenerationConfig fields (num_beams must be 1).
            states: per-row states to continue from.
            prompt_ids: the prompts' token ids, used as given (default: the texts encoded).
        """
        cfg, rules = self._setup(options)
        if cfg.num_beams > 1:
            raise UserInputError("beam search runs on its own, not in a shared batch; use generate()")
        states = states or [None] * len(prompts)
        given = prompt_ids or [None] * len(prompts)
        ids = [self._prompt_ids(p, s, g) for p, s, g in zip(prompts, states, given)]
        return TextJob(decoder, self.tokenizer, prompts, ids, cfg, rules, states)

    def _word_variants(self, word: str) -> List[List[int]]:
        """A banned string as token sequences: as written and, for BPE, with a leading space."""
        variants = {tuple(self.tokenizer.encode(word))}
        if self.tokenizer.kind == "bpe" and not word.startswith(" "):
            variants.add(tuple(self.tokenizer.encode(" " + word)))
        return [list(v) for v in variants if v]

    def stream(self, prompt: str = "", *, state: Optional[DecoderState] = None, **options) -> Iterator[str]:
        """Yield the generated text in pieces as tokens are made (the prompt is not repeated).

        The pieces joined equal `generate(...).completion` for the same options and seed. A piece never
        ends inside a UTF-8 character, and text that may begin a stop string is held back until it is
        known not to.

        Args:
            prompt: the text to continue (or its token ids).
            state: a `result.state` to continue from.
            **options: GenerationConfig fields.
        """
        cfg, _ = self._setup(options)
        texts, ids, one = ([prompt], None, True) if isinstance(prompt, str) else self._prompts(prompt)
        if not one:
            raise UserInputError(f"stream() continues one prompt (a string or its token ids), got "
                                 f"{type(prompt).__name__}; use generate() for a list of prompts")
        if cfg.num_beams > 1 or cfg.num_return_sequences > 1:
            raise UserInputError("stream() makes one sequence by sampling or greedy search; use generate() "
                                 "for num_beams > 1 or num_return_sequences > 1")
        with self._decoder() as decoder:
            job = self.new_job(decoder, texts, options, [state], ids)
            for _, piece in job.run():
                yield piece

    def generate(self, prompt: Union[str, List[str]] = "", *, state: Optional[DecoderState] = None,
                 **options) -> Union[GeneratedText, List[GeneratedText]]:
        """Continue one prompt or a batch of prompts.

        Returns the prompt followed by its continuation as a GeneratedText (a str that also carries
        token_ids, logprobs, finish_reason and state); a list of them when `prompt` is a list or
        num_return_sequences > 1 (num_return_sequences results per prompt, in prompt order).

        Args:
            prompt: the text to continue, or a list of texts (of any lengths) decoded as one batch; or, as in
                the OpenAI API, a list of token ids (one prompt) or a list of such lists, used as given.
            state: a `result.state` to continue from (one prompt only).
            **options: GenerationConfig fields (max_new_tokens, temperature, top_k, top_p, min_p,
                typical_p, repetition_penalty, presence_penalty, frequency_penalty, no_repeat_ngram_size,
                dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n, dry_sequence_breakers,
                bad_words, logit_bias, num_beams, length_penalty, early_stopping, num_return_sequences, stop,
                max_time, seed, logprobs, min_new_tokens, eos_token_id).
        """
        cfg, rules = self._setup(options)
        prompts, given, one = self._prompts(prompt)
        if not prompts:
            return []
        n, given = cfg.num_return_sequences, given or [None] * len(prompts)
        if cfg.num_beams > 1:
            job = self.new_beam_job(prompts, options, [state] * len(prompts), given)
            while job.step():
                pass
            results = job.results()
        else:
            rows = [(p, g) for p, g in zip(prompts, given) for _ in range(n)]
            with self._decoder() as decoder:
                job = self.new_job(decoder, [p for p, _ in rows], options, [state] * len(rows), [g for _, g in rows])
                for _ in job.run():
                    pass
                results = job.results()
        return results[0] if one and n == 1 else results

    def new_beam_job(self, prompts: List[str], options: dict, states: Optional[List[Optional[DecoderState]]] = None,
                     prompt_ids: Optional[List[Optional[List[int]]]] = None) -> BeamJob:
        """Beam search for `prompts` (num_beams > 1), prefilled and ready to step: the server steps it
        between its batch steps, generate() to the end.

        Args:
            prompts: the texts to continue.
            options: GenerationConfig fields.
            states: per-prompt states to continue from.
            prompt_ids: the prompts' token ids, used as given (default: the texts encoded).
        """
        cfg, rules = self._setup(options)
        states = states or [None] * len(prompts)
        given = prompt_ids or [None] * len(prompts)
        ids = [self._prompt_ids(p, s, g) for p, s, g in zip(prompts, states, given)]
        return BeamJob(self.model, self.tokenizer, prompts, ids, cfg, rules, states)

    @torch.inference_mode()
    def score(self, text: Union[str, List[int]]) -> Tuple[List[int], List[Optional[float]]]:
        """The token ids of `text` (or the ids given) and the log-probability of each given the ones before
        it (None for the first, which has no context): what OpenAI's echo with logprobs returns for a prompt."""
        _, given, one = ([text], None, True) if isinstance(text, str) else \
            self._prompts(text) if isinstance(text, (list, tuple)) or hasattr(text, "tolist") else (None, None, False)
        if not one:
            raise UserInputError(f"score() takes one text string or its token ids, got {type(text).__name__}")
        ids = given[0] if given else self.tokenizer.encode(text)
        if len(ids) < 2:
            return ids, [None] * len(ids)
        device = next(self.model.parameters()).device
        logits, _ = self.model(torch.tensor([ids], device=device))
        lp = logits[0, :-1].float().log_softmax(-1).gather(-1, torch.tensor(ids[1:], device=device)[:, None])
        return ids, [None] + lp.squeeze(-1).tolist()

    # -- files ---------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "lstmgen_version": __version__, "model": self.model.config.to_dict(),
                "tokenizer": self.tokenizer.kind, **self.info}

    def save_pretrained(self, out_dir, *, dtype: Optional[torch.dtype] = None, card: bool = True) -> Path:
        """Write the model folder (config, weights, tokenizer, generation defaults, model card).

        Args:
            out_dir: the folder (created if needed).
            dtype: store floating-point weights in this type (e.g. torch.float16); loading casts back.
            card: also write README.md.
        """
        extra = {"generation_config.json": json.dumps(self.generation_config.to_dict(), indent=2)}
        if self.chat_template is not None:
            extra[chat.TEMPLATE_FILE] = self.chat_template
        return save_folder(out_dir, self.model, self.tokenizer.hf.to_str(pretty=True), self.config_dict(),
                           dtype=dtype, extra=extra, card=card)

    def chat_prompt(self, messages: List[dict]) -> Tuple[str, List[str]]:
        """The prompt for a conversation (OpenAI's messages) under this model's chat template, and the stop
        strings that end an answer (the default transcript's next turn; none for a template of its own)."""
        prompt = chat.render(messages, self.chat_template)
        return prompt, list(chat.DEFAULT_STOP) if self.chat_template is None else []

    @classmethod
    def from_pretrained(cls, name_or_dir, *, device: Optional[str] = None, backend: Optional[str] = None,
                        dtype: Optional[str] = None) -> "TextGenerator":
        """Load a model folder or bundled model.

        Args:
            name_or_dir: a folder written by save_pretrained, or a bundled model's name.
            device: where to put the model (default cpu).
            backend: override the LSTM backend ("fused", "reference").
            dtype: "float32" (default) or "bfloat16" weights (or torch.float32 / torch.bfloat16). bf16 halves
                the bytes each decoding step reads: on a CPU with bf16 arithmetic (AVX512-BF16, AMX) a 3 x 512
                model decoded one row at 1,423 tokens/s against about 780 in float32 here. The bundled
                shakespeare-char over 2,000 characters of its text: log-probabilities 0.013 apart on average,
                the same loss (1.0207), the same most likely character at 99.7% of positions.
        """
        dtype = {None: "float32", torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype, dtype)
        if dtype not in ("float32", "bfloat16"):
            raise UserInputError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        d, config = open_folder(name_or_dir)
        if config.get("model_type") != MODEL_TYPE:
            raise ModelFolderError(f"{d / 'config.json'}: model_type {config.get('model_type')!r} is not "
                                   f"{MODEL_TYPE!r}; this folder is not a language model")
        try:
            lm_config = LMConfig.from_dict(dict(config["model"], **({"backend": backend} if backend else {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFolderError(f"{d / 'config.json'}: bad model settings ({e}); retrain or restore the file")
        tokenizer = Tokenizer.load(d / "tokenizer.json")
        if tokenizer.vocab_size != lm_config.vocab_size:
            raise ModelFolderError(f"{d}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json says "
                                   f"{lm_config.vocab_size}; the files come from different models")
        model = LanguageModel(lm_config)
        load_weights(model, d / "model.safetensors")
        gen = GenerationConfig()
        if (d / "generation_config.json").is_file():
            try:
                gen = GenerationConfig.from_dict(read_json(d / "generation_config.json"))
            except (TypeError, ValueError) as e:
                raise ModelFolderError(f"{d / 'generation_config.json'}: {e}; fix or delete the file") from None
        info = {k: v for k, v in config.items() if k not in ("model_type", "lstmgen_version", "model", "tokenizer")}
        pipeline = cls(model.to(pick_device(device or "cpu"), getattr(torch, dtype)).eval(), tokenizer, gen, info)
        pipeline.chat_template = chat.read_template(d)
        return pipeline


def _is_id(x) -> bool:
    """A token id: an int (numpy's too), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _pipelines() -> dict:
    from .classification import MODEL_TYPE as CLASSIFIER
    from .classification import TextClassifier
    from .tagging import MODEL_TYPE as TAGGER
    from .tagging import Tagger
    from .translation import MODEL_TYPE as SEQ2SEQ
    from .translation import Translator

    return {MODEL_TYPE: TextGenerator, CLASSIFIER: TextClassifier, TAGGER: Tagger, SEQ2SEQ: Translator}


def load(name_or_dir, **kwargs) -> TextGenerator:
    """The pipeline for a model folder or bundled model name (`lstmgen.load("shakespeare-char")`).

    Args:
        name_or_dir: a model folder or a bundled model's name.
        **kwargs: passed to the pipeline's from_pretrained (device, backend).
    """
    d = resolve_model_dir(name_or_dir)
    cfg = read_json(d / "config.json") if (d / "config.json").is_file() else {}
    kind = cfg.get("model_type", MODEL_TYPE)
    pipelines = _pipelines()
    if kind not in pipelines:
        raise ModelFolderError(f"{d / 'config.json'}: model_type {kind!r} is not one of "
                               f"{', '.join(pipelines)}; this folder is not an lstmgen model")
    return pipelines[kind].from_pretrained(d, **kwargs)


__all__ = ["TextGenerator", "load"]
