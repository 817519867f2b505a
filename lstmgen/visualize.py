"""Seeing inside an LSTM: gate and cell activations over a text, and the cells that track its structure.

After Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent Networks" (2015): some cells
of a character LSTM follow quotes, brackets or the position in a line. `trace` runs the reference
equations token by token and records every gate; `find_cells` ranks cells by their correlation with
simple features of the text; `write_report` makes one self-contained HTML file (heatmaps over the text,
the model's top-5 next tokens on hover) and `write_png` a figure of the best cells.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .errors import UserInputError
from .nn.lstm import lstm_gates

GATES = ("i", "f", "o", "c")  # what the report shows per cell: input, forget, output gate and the cell state


@dataclass
class Trace:
    """Everything the LSTM did while reading a text.

    Attributes:
        pieces: the text of each token (they join to the decoded text).
        ids: the token ids.
        acts: "i", "f", "g", "o", "c", "h" -> (layers, tokens, hidden) activations after each token.
        top5: after each token, the five likeliest next tokens and their probabilities.
    """

    pieces: List[str]
    ids: List[int]
    acts: Dict[str, Tensor]
    top5: List[List[Tuple[str, float]]]


@torch.inference_mode()
def trace(pipeline, text: str) -> Trace:
    """Run `text` through the pipeline's LSTM with the equations of DESIGN.md, recording every gate.

    Args:
        pipeline: a TextGenerator.
        text: the text to read (at least one token).
    """
    model, tok = pipeline.model.eval(), pipeline.tokenizer
    if model.config.mogrifier_rounds:
        raise UserInputError("the gate read-out runs the plain LSTM equations; this model is a Mogrifier LSTM")
    ids = tok.encode(text)
    if not ids:
        raise ValueError("the text to inspect is empty")
    L, H = model.config.num_layers, model.config.hidden_size
    device = next(model.parameters()).device
    h = torch.zeros(L, H, device=device)
    c = torch.zeros(L, H, device=device)
    acts = {k: torch.zeros(L, len(ids), H) for k in ("i", "f", "g", "o", "c", "h")}
    top5 = []
    emb = model.embedding(torch.tensor(ids, device=device))
    for t in range(len(ids)):
        x = emb[t]
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(model.layer_weights()):
            S = w_hh.shape[1]  # a narrower top layer (last_layer_size) fills the first S units; the rest read 0
            i, f, g, o = lstm_gates(x @ w_ih.t() + (b_ih if b_ih is not None else 0), h[layer, :S], w_hh, b_hh)
            c_new = f * c[layer, :S] + i * g
            h_new = o * torch.tanh(c_new)
            for k, v in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c_new), ("h", h_new)):
                acts[k][layer, t, :S] = v.float().cpu()
            h[layer, :S], c[layer, :S] = h_new, c_new
            x = h_new
        y = model.proj(x) if model.proj is not None else x
        probs = model.decoder(y).float().softmax(-1)
        p, idx = probs.topk(min(5, probs.shape[-1]))
        top5.append([(tok.decode([j]), float(q)) for j, q in zip(idx.tolist(), p.tolist())])
    return Trace(_pieces(tok, ids, text), ids, acts, top5)


def _pieces(tok, ids: List[int], text: str) -> List[str]:
    """The stretch of the original text each token stands for (so that characters the model maps to <unk>
    still show, and features see them); from the tokenizer's offsets, else by decoding."""
    enc = tok.hf.encode(text)
    starts = [o[0] for o in enc.offsets]
    if enc.ids == ids and starts == sorted(starts):
        starts[0] = 0
        return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    out, prev = [], ""
    for n in range(1, len(ids) + 1):
        full = tok.decode(ids[:n])
        out.append(full[len(prev):] if full.startswith(prev) else tok.decode([ids[n - 1]]))
        prev = full
    return out


# -- features and the cell search ------------------------------------------------------------------------
def text_features(pieces: Sequence[str]) -> Dict[str, List[float]]:
    """Per token, simple facts about where it stands in the text (after reading it)."""
    feats: Dict[str, List[float]] = {k: [] for k in ("inside quotes", "position in line", "inside brackets",
                                                     "line start", "position in word", "uppercase")}
    quote, depth, col, word = False, 0, 0, 0
    for piece in pieces:
        for ch in piece:
            if ch in "\"“”":
                quote = not quote
            depth = max(0, depth + (ch in "([{") - (ch in ")]}"))
            col = 0 if ch == "\n" else col + 1
            word = 0 if not ch.isalnum() else word + 1
        feats["inside quotes"].append(float(quote))
        feats["position in line"].append(float(col))
        feats["inside brackets"].append(float(depth > 0))
        feats["line start"].append(float(piece.endswith("\n")))
        feats["position in word"].append(float(word))
        feats["uppercase"].append(float(piece.strip().isupper()))
    return feats


def correlations(values: Tensor, feature: Sequence[float]) -> Tensor:
    """Pearson correlation of each column of `values` (tokens, cells) with `feature` (NaN where either is
    constant)."""
    f = torch.tensor(feature, dtype=torch.float64)
    v = values.double()
    fc, vc = f - f.mean(), v - v.mean(0)
    denom = vc.norm(dim=0) * fc.norm()
    return (fc @ vc) / denom


def find_cells(tr: Trace, top: int = 1) -> List[dict]:
    """For each feature of the text, the cells (layer, unit) whose state correlates with it best.

    Returns:
        [{"feature", "layer", "unit", "r"}], strongest first; features constant over the text are left out.
    """
    L, T, H = tr.acts["c"].shape
    cells = tr.acts["c"].permute(1, 0, 2).reshape(T, L * H)
    found = []
    for name, values in text_features(tr.pieces).items():
        r = correlations(cells, values)
        if torch.isnan(r).all():
            continue
        order = r.nan_to_num(0.0).abs().argsort(descending=True)[:top]
        found += [{"feature": name, "layer": int(j) // H, "unit": int(j) % H, "r": round(float(r[j]), 3)}
                  for j in order.tolist()]
    return sorted(found, key=lambda d: -abs(d["r"]))


# -- outputs ---------------------------------------------------------------------------------------------
def _selection(tr: Trace, cells: Sequence[Tuple[int, int]], top: int) -> List[dict]:
    chosen = find_cells(tr)[:top]
    seen = {(d["layer"], d["unit"]) for d in chosen}
    L, _, H = tr.acts["c"].shape
    for layer, unit in cells:
        if not (0 <= layer < L and 0 <= unit < H):
            raise ValueError(f"cell {layer}:{unit} does not exist: layers 0-{L - 1}, units 0-{H - 1}")
        if (layer, unit) not in seen:
            chosen.append({"feature": "chosen", "layer": layer, "unit": unit, "r": None})
            seen.add((layer, unit))
    return chosen


def write_report(tr: Trace, out, *, title: str = "lstmgen inspect", cells: Sequence[Tuple[int, int]] = (),
                 top: int = 6) -> Path:
    """One self-contained HTML file: per selected cell, the text coloured by its state and by its input,
    forget and output gates; hovering a token shows the model's top-5 next tokens.

    Args:
        tr: a trace.
        out: the .html file.
        title: the page title.
        cells: (layer, unit) pairs to show besides the ones the search finds.
        top: how many found cells to show.
    """
    chosen = _selection(tr, cells, top)
    data = {
        "pieces": tr.pieces,
        "top5": [[[s, round(p, 4)] for s, p in row] for row in tr.top5],
        "cells": [dict(d, **{g: [round(v, 3) for v in tr.acts[g][d["layer"], :, d["unit"]].tolist()]
                             for g in GATES}) for d in chosen],
    }
    page = _TEMPLATE.replace("__TITLE__", html.escape(title)).replace(
        "__DATA__", json.dumps(data, ensure_ascii=False).replace("</", "<\\/"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def write_png(tr: Trace, out, *, cells: Sequence[Tuple[int, int]] = (), top: int = 4, max_chars: int = 400,
              width: int = 80) -> Path:
    """The text coloured by the best cells' states (blue negative, red positive), one panel per cell.

    Args:
        tr: a trace.
        out: the .png file.
        cells: (layer, unit) pairs to show besides the ones found.
        top: how many found cells to show.
        max_chars: the text is cut here.
        width: characters per line in the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = _selection(tr, cells, top)
    chars, owner = [], []  # each character, and the token it belongs to
    for t, piece in enumerate(tr.pieces):
        for ch in piece:
            chars.append(ch)
            owner.append(t)
    chars, owner = chars[:max_chars], owner[:max_chars]
    rows = []
    col = 0
    for k, ch in enumerate(chars):
        if col == 0:
            rows.append([])
        rows[-1].append(k)
        col = 0 if ch == "\n" or col + 1 >= width else col + 1
    fig_h = sum(0.22 * len(rows) + 0.5 for _ in chosen)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(width * 0.11, max(fig_h, 1.0)), squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for ax, d in zip(axes[:, 0], chosen):
        vals = tr.acts["c"][d["layer"], :, d["unit"]]
        scale = float(vals.abs().max()) or 1.0
        for y, row in enumerate(rows):
            for x, k in enumerate(row):
                v = float(vals[owner[k]]) / scale
                ax.add_patch(plt.Rectangle((x, -y - 1), 1, 1, color=cmap(0.5 + 0.5 * v), lw=0))
                ch = chars[k]
                ax.text(x + 0.5, -y - 0.5, "\u21b5" if ch == "\n" else ch, ha="center", va="center",
                        fontsize=7, family="monospace")
        ax.set_xlim(0, width)
        ax.set_ylim(-len(rows), 0)
        ax.axis("off")
        what = d["feature"] + (f", r = {d['r']:+.2f}" if d["r"] is not None else "")
        ax.set_title(f"layer {d['layer']}, cell {d['unit']} ({what})", fontsize=8, loc="left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def parse_cells(spec: Optional[str]) -> List[Tuple[int, int]]:
    """"1:37,0:12" -> [(1, 37), (0, 12)]."""
    if not spec:
        return []
    out = []
    for part in spec.split(","):
        try:
            layer, unit = part.split(":")
            out.append((int(layer), int(unit)))
        except ValueError:
            raise ValueError(f"--cells takes layer:unit pairs like 1:37,0:12, got {part!r}") from None
    return out


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; max-width: 1100px; }
h1 { font-size: 20px; } h2 { font-size: 15px; margin: 22px 0 6px; }
.note { color: #667085; }
.text { font: 13px/1.9 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all;
        border: 1px solid #d0d5dd; border-radius: 6px; padding: 8px; }
.tok { border-radius: 2px; cursor: default; }
.label { font-size: 12px; color: #667085; margin: 8px 0 2px; }
#tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #98a2b3; border-radius: 6px;
       padding: 6px 8px; font: 12px ui-monospace, monospace; display: none; box-shadow: 0 2px 8px #0002; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p class="note">Each character (token) is coloured by one cell's value after reading it: the cell state c
(blue negative, red positive) and the input, forget and output gates (0 white, 1 green). Hover a token for the
model's five likeliest next tokens.</p>
<div id="cells"></div>
<div id="tip"></div>
<script>
"use strict";
const DATA = __DATA__;
const tip = document.getElementById("tip");
const show = (s) => s === "\\n" ? "\\u21b5" : s === " " ? "\\u2423" : s;
function colour(v, gate, scale) {
  if (gate === "c") {
    const x = Math.max(-1, Math.min(1, v / scale));
    return x >= 0 ? `rgba(214, 39, 40, ${x})` : `rgba(31, 119, 180, ${-x})`;
  }
  return `rgba(44, 160, 44, ${Math.max(0, Math.min(1, v))})`;
}
function row(cell, gate) {
  const div = document.createElement("div");
  div.className = "text heatmap";
  const vals = cell[gate];
  const scale = Math.max(1e-6, ...vals.map(Math.abs));
  DATA.pieces.forEach((piece, t) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = piece;
    span.style.background = colour(vals[t], gate, scale);
    span.dataset.t = t;
    span.dataset.v = vals[t];
    div.append(span);
  });
  return div;
}
const names = { c: "cell state c", i: "input gate i", f: "forget gate f", o: "output gate o" };
for (const cell of DATA.cells) {
  const h = document.createElement("h2");
  h.textContent = `layer ${cell.layer}, cell ${cell.unit}` +
    (cell.r === null ? " (chosen)" : ` — ${cell.feature} (r = ${cell.r.toFixed(2)})`);
  document.getElementById("cells").append(h);
  for (const gate of ["c", "i", "f", "o"]) {
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = names[gate];
    document.getElementById("cells").append(label, row(cell, gate));
  }
}
document.addEventListener("mouseover", (e) => {
  const t = e.target.dataset && e.target.dataset.t;
  if (t === undefined) { tip.style.display = "none"; return; }
  const lines = DATA.top5[t].map(([s, p]) => `${show(s).padEnd(4)} ${(100 * p).toFixed(1)}%`);
  tip.textContent = `value ${Number(e.target.dataset.v).toFixed(3)}\\nnext:\\n` + lines.join("\\n");
  tip.style.whiteSpace = "pre";
  tip.style.display = "block";
  tip.style.left = (e.clientX + 12) + "px";
  tip.style.top = (e.clientY + 12) + "px";
});
</script>
</body></html>
"""
