"""Hugging Face transformers as the oracle for decoding: a transformers model around any function from
token ids to next-token logits, and transformers' own logits processors for a set of lstmgen options.

transformers is a test-only dependency (pinned to a major version in pyproject.toml); nothing here is
downloaded: the models are built in memory.
"""
from __future__ import annotations

import functools
from typing import Callable, List, Sequence

import torch
from torch import Tensor, nn
from transformers import GenerationConfig as HFConfig
from transformers import GenerationMixin, LogitsProcessorList, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from lstmgen.generation import GenerationConfig

LogitsFn = Callable[[Tensor], Tensor]  # (N, L) token ids -> (N, V) next-token logits


class _Config(PretrainedConfig):
    model_type = "lstmgen-oracle"


class OracleLM(PreTrainedModel, GenerationMixin):
    """A transformers causal LM whose next-token logits are `fn(input_ids)`, recomputed from the whole
    sequence at every step (no cache), so its generate() calls the same function lstmgen's decoding does."""

    config_class = _Config

    def __init__(self, fn: LogitsFn, vocab_size: int) -> None:
        super().__init__(_Config(vocab_size=vocab_size))
        self.fn = fn
        self._anchor = nn.Parameter(torch.zeros(1))  # transformers reads the device and dtype from a parameter

    def forward(self, input_ids: Tensor, **_) -> CausalLMOutput:
        return CausalLMOutput(logits=self.fn(input_ids)[:, None, :].float())


def hf_config(cfg: GenerationConfig, bad_words: Sequence[Sequence[int]] = (), do_sample: bool = False,
              pad_token_id: int = 0) -> HFConfig:
    """transformers' GenerationConfig for the same lstmgen options (those both libraries have)."""
    kw = dict(max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, num_return_sequences=cfg.num_return_sequences,
              length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping, eos_token_id=cfg.eos_token_id,
              pad_token_id=pad_token_id, do_sample=do_sample, use_cache=False,
              repetition_penalty=cfg.repetition_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size or None,
              min_new_tokens=cfg.min_new_tokens or None,
              bad_words_ids=[list(w) for w in bad_words] or None,
              sequence_bias=[[[i], v] for i, v in cfg.logit_bias.items()] or None)
    if do_sample:
        kw.update(temperature=cfg.temperature, top_k=cfg.top_k or None, top_p=cfg.top_p, min_p=cfg.min_p or None,
                  typical_p=cfg.typical_p)
    else:
        kw.update(temperature=None, top_k=None, top_p=None)
    return HFConfig(**kw)


@functools.lru_cache(maxsize=None)
def _processor_model(vocab_size: int) -> OracleLM:
    return OracleLM(lambda ids: torch.zeros(len(ids), vocab_size), vocab_size)


def hf_processors(cfg: GenerationConfig, prompt_len: int, vocab_size: int, bad_words: Sequence[Sequence[int]] = (),
                  do_sample: bool = True) -> LogitsProcessorList:
    """The processors (and, sampling, the warpers) transformers' generate() would build for these options,
    in its own order, for a prompt of prompt_len tokens."""
    model = _processor_model(vocab_size)
    gc = hf_config(cfg, bad_words, do_sample)
    model._prepare_special_tokens(gc, kwargs_has_attention_mask=False, device="cpu")
    return model._get_logits_processor(generation_config=gc, input_ids_seq_length=prompt_len, device="cpu",
                                       model_kwargs={})


def hf_beam_search(fn: LogitsFn, vocab_size: int, prompts: Tensor, cfg: GenerationConfig,
                   bad_words: Sequence[Sequence[int]] = ()) -> List[List[tuple]]:
    """transformers' beam search over `fn`: per prompt, (generated ids, score) of its returned sequences,
    best first, without the filler it returns where fewer hypotheses finished."""
    model = OracleLM(fn, vocab_size)
    pad = cfg.eos_token_id if cfg.eos_token_id is not None else 0
    out = model.generate(prompts, generation_config=hf_config(cfg, bad_words, pad_token_id=pad),
                         return_dict_in_generate=True, output_scores=True)
    P, n = prompts.shape[1], cfg.num_return_sequences
    lengths = (out.beam_indices >= 0).sum(-1).tolist()
    seqs = [(out.sequences[i, P:P + lengths[i]].tolist(), float(out.sequences_scores[i]))
            for i in range(len(lengths))]
    # filler: a sequence whose summed log-probability holds transformers' -1e9 mask
    real = [s for s in seqs if s[1] * max(len(s[0]), 1) ** cfg.length_penalty > -1e8]
    return [[s for s in seqs[b * n:(b + 1) * n] if s in real] for b in range(len(prompts))]


def as_lists(outs) -> List[List[tuple]]:
    """lstmgen's beam outputs in hf_beam_search's form (without the empty ones it pads with)."""
    return [[(o.token_ids, o.score) for o in per if o.score > float("-inf")] for per in outs]


def same(ours: List[tuple], theirs: List[tuple], tol: float = 1e-5) -> bool:
    """The same sequences in the same order, with scores equal up to float32 rounding."""
    return len(ours) == len(theirs) and all(a == c and abs(b - d) <= tol * max(1.0, abs(d))
                                            for (a, b), (c, d) in zip(ours, theirs))


def table_fn(table: Tensor, context: int = 2) -> LogitsFn:
    """A deterministic toy model: the logits are a row of `table` chosen by the last `context` tokens and the
    length, so that beams meet different distributions and lengths matter."""
    M = table.shape[0]

    def fn(ids: Tensor) -> Tensor:
        key = torch.full((ids.shape[0],), ids.shape[1] * 7919, dtype=torch.long)
        for k in range(1, min(context, ids.shape[1]) + 1):
            key = key * 31 + ids[:, -k]
        return table[key % M]

    return fn


