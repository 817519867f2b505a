"""The Translator pipeline: an encoder-decoder with its tokenizers and decoding defaults, saved as one
model folder. It serves translation, summarization and question answering alike (`task` says which).

A model folder holds config.json (model_type "lstm-seq2seq"), model.safetensors, tokenizer.json (the
source side, or the one shared tokenizer), target_tokenizer.json (when the sides differ),
generation_config.json and README.md. Sources longer than `max_source_tokens` are cut to that length
with a warning that counts them (training does the same and records the count).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from . import __version__
from .atomic import atomic_write_bytes
from .errors import ModelFolderError, UserInputError, as_texts
from .generation import GenerationConfig
from .generation.search import search
from .models.seq2seq import Seq2Seq, Seq2SeqConfig
from .tokenizers import Tokenizer
from .training import pick_device

MODEL_TYPE = "lstm-seq2seq"
BOS, EOS = "<s>", "</s>"
TARGET_TOKENIZER = "target_tokenizer.json"


class Translator:
    """Source texts in, target texts out: translate, score, save and load.

    Args:
        model: the Seq2Seq model.
        src_tokenizer: the source side's tokenizer.
        tgt_tokenizer: the target side's (the same object when shared); holds <s> and </s>.
        generation_config: default decoding options (beam size, length penalty, ...).
        text_task: what the pairs were: "translation", "summarization" or "question-answering" (it picks
            the scores; every seq2seq model is served by /v1/translate, whose `task` is "translation").
        max_source_tokens: longer sources are cut (with a warning).
        info: the rest of config.json (data, training, metrics).
    """

    task = "translation"

    def __init__(self, model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                 generation_config: Optional[GenerationConfig] = None, text_task: str = "translation",
                 max_source_tokens: int = 400, info: Optional[dict] = None) -> None:
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tokenizer, tgt_tokenizer
        self.bos, self.eos = tgt_tokenizer.token_to_id(BOS), tgt_tokenizer.token_to_id(EOS)
        if self.bos is None or self.eos is None:
            raise ModelFolderError(f"the target tokenizer has no {BOS} / {EOS} tokens; it was not made for "
                                   "sequence to sequence")
        self.generation_config = (generation_config or GenerationConfig(num_beams=5, temperature=0.0,
                                                                         max_new_tokens=200)).updated(
            eos_token_id=self.eos)
        self.text_task, self.max_source_tokens, self.info = text_task, max_source_tokens, info or {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- text <-> ids ------------------------------------------------------------------------------
    def source_ids(self, texts: Sequence[str]) -> Tuple[List[List[int]], int]:
        """Source ids of each text (cut to max_source_tokens) and how many were cut."""
        out, cut = [], 0
        for t in texts:
            ids = self.src_tok.encode(t)
            if len(ids) > self.max_source_tokens:
                ids, cut = ids[:self.max_source_tokens], cut + 1
            out.append(ids or [self.src_tok.unk_id or 0])
        return out, cut

    def decode(self, ids: Sequence[int]) -> str:
        """Target text of ids (a final </s> dropped)."""
        ids = list(ids)
        if ids and ids[-1] == self.eos:
            ids = ids[:-1]
        return self.tgt_tok.decode([i for i in ids if i != self.bos]).strip()

    # -- decoding ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(self, sources: List[List[int]], cfg: GenerationConfig, batch_size: int = 64):
        """Search outputs per source (a list of num_return_sequences SequenceOutputs each). Sources are
        decoded in batches of similar length, then put back in order."""
        from .training.tasks import pad_batch

        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results: List = [None] * len(sources)
        model = self.model

        def step(tokens, st):
            logp, st, _ = model.decode_step(tokens, st)
            return logp, st

        for k in range(0, len(order), batch_size):
            chunk = order[k:k + batch_size]
            src, lengths = pad_batch([sources[i] for i in chunk])
            state = model.encode(src.to(self.device), lengths)
            for i, outs in zip(chunk, search(step, model.reorder_state, state, len(chunk), cfg, self.bos,
                                             device=self.device)):
                results[i] = outs
        return results

    def translate(self, texts, **options) -> List[dict]:
        """For each text: {"translation", "score" (mean log-probability), "finish_reason"}, and with
        num_return_sequences > 1 also "candidates" (every returned text, best first).

        Args:
            texts: a text or a list of texts.
            **options: decoding options (num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens,
                min_new_tokens, temperature, top_k, top_p, seed, num_return_sequences, ...).
        """
        texts = as_texts(texts)
        cfg = self.generation_config.updated(**options, eos_token_id=self.eos)
        if cfg.stop:
            raise UserInputError("stop strings are for text generation; a translation ends at its </s>")
        sources, cut = self.source_ids(texts)
        if cut:
            warnings.warn(f"{cut} of {len(texts)} source texts were longer than {self.max_source_tokens} tokens "
                          "and were cut to that length", stacklevel=2)
        out = []
        for outs in self.generate_ids(sources, cfg.updated(logprobs=True)):
            texts_ = [self.decode(o.token_ids) for o in outs]
            scores = [sum(o.logprobs) / max(len(o.logprobs), 1) for o in outs]
            r = {"translation": texts_[0] if texts_ else "", "score": round(scores[0], 4) if scores else None,
                 "finish_reason": outs[0].finish_reason if outs else "length"}
            if cfg.num_return_sequences > 1:
                r["candidates"] = texts_
            out.append(r)
        return out

    def __call__(self, texts, **options) -> List[str]:
        """The best translation of each text, as plain strings."""
        return [r["translation"] for r in self.translate(texts, **options)]

    summarize = answer = __call__

    @torch.inference_mode()
    def attention(self, source: str, target: Optional[str] = None, **options):
        """Attention weights (T, S) of the model writing `target` (default: its own translation) for
        `source`, with the source and target token strings."""
        target = self(source, **options)[0] if target is None else target
        src, _ = self.source_ids([source])
        tgt = self.tgt_tok.encode(target) + [self.eos]
        src_t = torch.tensor(src, device=self.device)
        _, attn, _ = self.model(src_t, torch.tensor([len(src[0])]), torch.tensor([[self.bos] + tgt[:-1]],
                                                                                   device=self.device))
        if attn is None:
            raise UserInputError("this model has no attention (attention = none)")
        pieces = [self.src_tok.decode([i]) for i in src[0]], [self.tgt_tok.decode([i]) if i != self.eos else EOS
                                                             for i in tgt]
        return attn[0].float().cpu(), pieces[0], pieces[1]

    # -- files -------------------------------------------------------------------------------------
    @property
    def shared_vocab(self) -> bool:
        return self.src_tok is self.tgt_tok

    def config_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "lstmgen_version": __version__, "text_task": self.text_task,
                "model": self.model.config.to_dict(), "max_source_tokens": self.max_source_tokens,
                "shared_vocab": self.shared_vocab, "tokenizer": self.src_tok.kind, **self.info}

    def save_pretrained(self, out_dir) -> Path:
        from .folder import save_folder

        out = save_folder(out_dir, self.model, self.src_tok.hf.to_str(pretty=True), self.config_dict())
        if not self.shared_vocab:
            atomic_write_bytes(out / TARGET_TOKENIZER, self.tgt_tok.hf.to_str(pretty=True).encode())
        gen = self.generation_config.to_dict()
        atomic_write_bytes(out / "generation_config.json", json.dumps(gen, indent=2).encode())
        return out

    @classmethod
    def from_pretrained(cls, name_or_dir, *, device: Optional[str] = None, backend: Optional[str] = None):
        from .folder import load_weights, open_folder, read_json

        d, config = open_folder(name_or_dir)
        try:
            mc = Seq2SeqConfig.from_dict(dict(config["model"], **({"backend": backend} if backend else {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFolderError(f"{d / 'config.json'}: bad seq2seq settings ({e})") from None
        src_tok = Tokenizer.load(d / "tokenizer.json")
        if config.get("shared_vocab"):
            tgt_tok = src_tok
        elif (d / TARGET_TOKENIZER).is_file():
            tgt_tok = Tokenizer.load(d / TARGET_TOKENIZER)
        else:
            raise ModelFolderError(f"model folder {d}: missing {TARGET_TOKENIZER}; copy the whole folder")
        for side, tok, n in (("source", src_tok, mc.src_vocab_size), ("target", tgt_tok, mc.tgt_vocab_size)):
            if tok.vocab_size != n:
                raise ModelFolderError(f"{d}: the {side} tokenizer has {tok.vocab_size} tokens but config.json "
                                       f"says {n}; the files come from different models")
        model = Seq2Seq(mc)
        load_weights(model, d / "model.safetensors")
        gen = None
        if (d / "generation_config.json").is_file():
            try:
                gen = GenerationConfig.from_dict(read_json(d / "generation_config.json"))
            except (TypeError, ValueError) as e:
                raise ModelFolderError(f"{d / 'generation_config.json'}: {e}; fix or delete the file") from None
        info = {k: v for k, v in config.items() if k not in ("model_type", "lstmgen_version", "text_task", "model",
                                                             "max_source_tokens", "shared_vocab", "tokenizer")}
        return cls(model.to(pick_device(device or "cpu")), src_tok, tgt_tok, gen,
                   config.get("text_task", "translation"), int(config.get("max_source_tokens", 400)), info)
