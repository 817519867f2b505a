"""Sampling from a language model with (h, c) carried: the prompt runs through the LSTM once, then
one step per new token. The text so far is never run again, so each token costs one LSTM step.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, List, Optional

import torch

from ..errors import check_range
from ..models import LanguageModel
from ..serial import JSONConfig


@dataclass
class GenerationConfig(JSONConfig):
    """Decoding options, named as in Hugging Face generate() and the OpenAI API.

    Args:
        max_new_tokens: tokens to generate.
        temperature: softmax temperature; 0 means greedy (always the most likely token).
        top_k: sample only among the k most likely tokens (0 or None: all).
        top_p: sample from the smallest set of tokens whose probability reaches p (1.0: all).
        seed: seeds the sampler; the same model, prompt, options and seed give the same text.
    """

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: Optional[int] = None
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        check_range("max_new_tokens", self.max_new_tokens, 0)
        check_range("temperature", self.temperature, 0.0)
        check_range("top_k", self.top_k, 0)
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)


    def updated(self, **options) -> "GenerationConfig":
        """A copy with `options` (None values ignored) applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(options) - known
        if unknown:
            from ..errors import UserInputError
            raise UserInputError(f"unknown generation option(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(known))}")
        d = self.to_dict()
        d.update({k: v for k, v in options.items() if v is not None})
        return GenerationConfig(**d)


def filter_logits(logits: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus; Holtzman et al. 2020) on (B, V) logits."""
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already reach top_p (the top token always stays).
        drop_sorted = probs.cumsum(-1) - probs >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample_tokens(model: LanguageModel, prompt_ids: List[int], cfg: GenerationConfig,
                  banned: Optional[List[int]] = None) -> Iterator[int]:
    """Yield new token ids one at a time.

    Args:
        model: the language model (evaluation mode is set here).
        prompt_ids: the prompt, at least one token.
        cfg: decoding options.
        banned: ids never produced (e.g. `<unk>`).
    """
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    if cfg.seed is not None:
        gen.manual_seed(cfg.seed)
    else:
        gen.seed()  # fresh entropy for this generator only; the global RNG is left alone
    logits, state = model(torch.tensor([prompt_ids], device=device))  # the whole prompt in one call
    logits = logits[:, -1].float()
    for i in range(cfg.max_new_tokens):
        if banned:
            logits[:, banned] = float("-inf")
        if cfg.temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = filter_logits(logits, cfg).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        yield int(nxt.item())
        if i + 1 == cfg.max_new_tokens:
            break  # no step for a token nobody will ask for
        logits, state = model(nxt.view(1, 1), state)  # one step, (h, c) carried
        logits = logits[:, -1].float()
