"""ONNX export: one graph that both prefills a prompt and decodes a token, so any ONNX runtime can generate.

torch's exporter traces the time loop of an LSTM for one fixed length, so we export one *step* (token,
h, c -> logits, h, c, written with the equations of DESIGN.md over the model's weights) with a dynamic
batch, and wrap it in an ONNX `Scan` over the time axis. The file's graph is

    input_ids (B, T) int64, h0 (L, B, H), c0 (L, B, H)  ->  logits (B, V) after the last token, h_n, c_n

with T = the prompt's length to prefill and T = 1 for each new token. The tokenizer (tokenizer.json) and
the sizes travel in the model's metadata_props, so the one file is all a runtime needs.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserInputError
from .nn.lstm import lstm_cell

OPSET = 18


class OneStep(nn.Module):
    """token (B,), h, c (L, B, H) -> logits (B, V), h, c: one step of a LanguageModel, from the equations.

    Args:
        model: the LanguageModel whose weights it shares.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, h: Tensor, c: Tensor):
        m = self.model
        x = m.embedding(token)
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(m.layer_weights()):
            S = w_hh.shape[1]  # a narrower top layer (last_layer_size) uses the first S features of the state
            x_proj = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
            h_l, c_l = lstm_cell(x_proj, h[layer][..., :S], c[layer][..., :S], w_hh, b_hh)
            x = h_l
            if S < h.shape[-1]:
                h_l, c_l = F.pad(h_l, (0, h.shape[-1] - S)), F.pad(c_l, (0, h.shape[-1] - S))
            hs.append(h_l)
            cs.append(c_l)
        if m.proj is not None:
            x = m.proj(x)
        return m.decoder(x), torch.stack(hs), torch.stack(cs)


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Only the errors of `logger` while the block runs."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _step_graph(model, path: Path):
    """Export OneStep with a dynamic batch; the ONNX model."""
    import onnx

    cfg = model.config
    token = torch.zeros(2, dtype=torch.long)  # batch 2: torch.export specializes dimensions of size 1
    h = torch.zeros(cfg.num_layers, 2, cfg.hidden_size)
    batch = torch.export.Dim("batch")
    # the exporter's registry logs a warning for each torchvision op it skips: noise for an LSTM
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _quiet(registry):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(OneStep(model.eval()).float(), (token, h, h.clone()), dynamo=True,
                                    opset_version=OPSET, input_names=["step_token", "step_h", "step_c"],
                                    output_names=["step_logits", "step_h_next", "step_c_next"],
                                    dynamic_shapes={"token": {0: batch}, "h": {1: batch}, "c": {1: batch}},
                                    verbose=False)
    program.save(str(path))
    return onnx.load(str(path))


def export_onnx(pipeline, out, *, opset: int = OPSET) -> Path:
    """Write `pipeline`'s language model as one ONNX file (see the module docstring for its graph).

    Args:
        pipeline: a TextGenerator (lstmgen.load(...)).
        out: the .onnx file to write.
        opset: the ONNX opset (the step graph is exported at 18; Scan exists in every opset).
    """
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise UserInputError("ONNX export needs the onnx and onnxscript packages: pip install 'lstmgen[onnx]'") \
            from None
    model = pipeline.model
    if model.config.mogrifier_rounds:
        raise UserInputError("ONNX export runs the plain LSTM step; this model is a Mogrifier LSTM")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".step.onnx")
    try:
        step = _step_graph(model, tmp)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
    cfg = model.config
    body = step.graph
    body.name = "lstm_step"
    # Scan's body takes the state first, then the scanned element; it returns the state, then the outputs.
    inputs = {i.name: i for i in body.input}
    outputs = {o.name: o for o in body.output}
    del body.input[:]
    body.input.extend([inputs["step_h"], inputs["step_c"], inputs["step_token"]])
    del body.output[:]
    body.output.extend([outputs["step_h_next"], outputs["step_c_next"], outputs["step_logits"]])

    B, T, L, H, V = "batch", "time", cfg.num_layers, cfg.hidden_size, cfg.vocab_size
    nodes = [
        helper.make_node("Transpose", ["input_ids"], ["ids_by_time"], perm=[1, 0]),
        helper.make_node("Scan", ["h0", "c0", "ids_by_time"], ["h_n", "c_n", "logits_by_time"], body=body,
                         num_scan_inputs=1),
        helper.make_node("Constant", [], ["last"], value=helper.make_tensor("last", TensorProto.INT64, [], [-1])),
        helper.make_node("Gather", ["logits_by_time", "last"], ["logits"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "lstmgen_lm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, T]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [L, B, H]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [L, B, H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [B, V]),
         helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [L, B, H]),
         helper.make_tensor_value_info("c_n", TensorProto.FLOAT, [L, B, H])])
    onnx_model = helper.make_model(graph, opset_imports=list(step.opset_import), producer_name="lstmgen")
    onnx_model.ir_version = step.ir_version
    onnx_model.functions.extend(step.functions)
    meta = {"lstmgen.tokenizer": pipeline.tokenizer.hf.to_str(), "lstmgen.num_layers": str(L),
            "lstmgen.hidden_size": str(H), "lstmgen.vocab_size": str(V), "lstmgen.tokenizer_kind":
            pipeline.tokenizer.kind}
    for k, v in meta.items():
        onnx_model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(out))
    return out
