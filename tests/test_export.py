"""ONNX export: onnxruntime generates the same tokens as lstmgen, prefill and step in one graph."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

import lstmgen


@pytest.fixture(scope="module", params=["tiny_model_dir", "awd_model_dir"])
def exported(request, tmp_path_factory):
    """The tiny model, and one of AWD-LSTM's shape (its narrower top layer's state padded in h and c)."""
    from lstmgen.export import export_onnx

    gen = lstmgen.load(request.getfixturevalue(request.param))
    path = export_onnx(gen, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return gen, ort.InferenceSession(str(path)), path


def test_greedy_100_tokens_match(exported):
    gen, sess, _ = exported
    cfg = gen.model.config
    prompt = gen.tokenizer.encode("KING:")
    h = np.zeros((cfg.num_layers, 1, cfg.hidden_size), np.float32)
    logits, h, c = sess.run(None, {"input_ids": np.array([prompt], np.int64), "h0": h, "c0": h.copy()})
    tokens = []
    for _ in range(100):
        tokens.append(int(logits[0].argmax()))
        logits, h, c = sess.run(None, {"input_ids": np.array([[tokens[-1]]], np.int64), "h0": h, "c0": c})
    assert tokens == gen.generate("KING:", max_new_tokens=100, temperature=0).token_ids


def test_batches_states_and_lengths_match_the_model(exported):
    gen, sess, _ = exported
    cfg = gen.model.config
    g = torch.Generator().manual_seed(0)
    for B, T in ((1, 1), (3, 7), (2, 40)):
        ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
        h = torch.randn(cfg.num_layers, B, cfg.hidden_size, generator=g) * 0.5
        c = torch.randn(cfg.num_layers, B, cfg.hidden_size, generator=g) * 0.5
        with torch.no_grad():
            ref, (rh, rc) = gen.model(ids, (h, c))
        got, gh, gc = sess.run(None, {"input_ids": ids.numpy(), "h0": h.numpy(), "c0": c.numpy()})
        np.testing.assert_allclose(got, ref[:, -1].numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(gh, rh.numpy(), atol=1e-5)
        np.testing.assert_allclose(gc, rc.numpy(), atol=1e-5)


def test_the_file_carries_its_tokenizer(exported):
    import onnx
    from tokenizers import Tokenizer as HFTokenizer

    gen, _, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    hf = HFTokenizer.from_str(meta["lstmgen.tokenizer"])
    assert hf.encode("KING:").ids == gen.tokenizer.encode("KING:")
    assert int(meta["lstmgen.vocab_size"]) == gen.model.config.vocab_size


def test_cli_export(tiny_model_dir, tmp_path):
    from lstmgen.cli import main

    assert main(["export", "onnx", str(tiny_model_dir), str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 10_000


def test_a_mogrifier_model_is_refused(tiny_model_dir, tmp_path):
    """The exported step runs the plain LSTM equations: a Mogrifier LSTM would export as another model."""
    from lstmgen.errors import UserInputError
    from lstmgen.export import export_onnx
    from lstmgen.models import LanguageModel, LMConfig
    from lstmgen.pipelines import TextGenerator

    tok = lstmgen.load(tiny_model_dir).tokenizer
    model = LanguageModel(LMConfig(vocab_size=tok.vocab_size, hidden_size=8, num_layers=1, backend="reference",
                                   mogrifier_rounds=2))
    with pytest.raises(UserInputError, match="Mogrifier"):
        export_onnx(TextGenerator(model, tok), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
