"""AWD-LSTM's shape: a top layer narrower than the others (last_layer_size), tied to the embedding without a
projection. Its state is padded to the common width; every path that runs the model agrees with the others:
the sequence, step by step, the packed prefill, the equations backend, decoding blocks and the gate read-out
(the ONNX export: tests/test_export.py)."""
import pytest
import torch

import lstmgen
from lstmgen.errors import UserInputError
from lstmgen.generation import SamplingDecoder
from lstmgen.models import LanguageModel, LMConfig

AWD_SHAPE = dict(embed_size=16, hidden_size=32, num_layers=3, last_layer_size=16)  # as conftest's awd_model_dir


def _model(**kw) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LMConfig(vocab_size=40, **{"dropout": 0.0, **AWD_SHAPE, **kw})).eval()


def test_the_top_layer_ties_without_a_projection():
    m = _model()
    assert m.proj is None and m.lstm.num_layers == 2 and m.lstm_top.hidden_size == 16
    assert m.decoder.weight is m.embedding.weight
    assert [w_hh.shape[1] for _, w_hh, _, _ in m.layer_weights()] == [32, 32, 16]
    assert _model(last_layer_size=24).proj.weight.shape == (16, 24)  # narrower, but not the embedding's width
    for bad in (dict(last_layer_size=33), dict(last_layer_size=0), dict(num_layers=1)):
        with pytest.raises(UserInputError, match="last_layer_size"):
            _model(**bad)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_sequence_steps_and_packed_prefill_agree(backend):
    m = _model(backend=backend)
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, (h, c) = m(ids)
        assert h.shape == (3, 3, 32) and not h[-1, :, 16:].any() and not c[-1, :, 16:].any()
        state = m.init_state(3)
        for t in range(9):
            step, state = m.step(ids[:, t], state)
            assert torch.allclose(step, logits[:, t], atol=1e-5)
        assert torch.allclose(state[0], h, atol=1e-6) and torch.allclose(state[1], c, atol=1e-5)
        lengths = torch.tensor([9, 4, 1])
        packed, (hp, _) = m(ids, (h, c), lengths=lengths)  # continuing from a carried state
        again, (ha, _) = m(ids, (h, c))
        for b, n in enumerate(lengths.tolist()):
            assert torch.allclose(packed[b, :n], m(ids[b:b + 1, :n], (h[:, b:b + 1], c[:, b:b + 1]))[0][0], atol=1e-5)
        assert torch.allclose(hp[:, 0], ha[:, 0], atol=1e-6)
    fused = _model()
    ref = _model(backend="reference")
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        assert torch.allclose(fused(ids)[0], ref(ids)[0], atol=1e-5)


@pytest.mark.parametrize("locked", [False, True])
def test_the_hidden_dropout_applies_between_the_stack_and_the_top(locked):
    # two layers: the only place for dropout_hidden is between the one-layer stack and the top layer
    m = _model(num_layers=2, dropout_hidden=0.5, locked_dropout=locked).train()
    ids = torch.randint(0, 40, (2, 12))
    torch.manual_seed(3)
    a, _ = m(ids)
    torch.manual_seed(4)
    b, _ = m(ids)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert m.lstm_top.weight_hh_l0.grad.abs().sum() > 0 and m.lstm.weight_hh_l0.grad.abs().sum() > 0


def test_decoding_blocks_equal_step_by_step(awd_model_dir):
    gen = lstmgen.load(awd_model_dir)

    def run(block_steps):
        dec = SamplingDecoder(gen.model, block_steps=block_steps, graphs=False)
        job = gen.new_job(dec, ["KING:", "the", "a"], dict(max_new_tokens=30, temperature=0.9, seed=7))
        list(job.run())
        return job.results()

    step, block = run(0), run(8)
    assert [r.token_ids for r in step] == [r.token_ids for r in block]
    for x, y in zip(step, block):
        assert torch.allclose(x.state.h, y.state.h, atol=1e-6) and torch.allclose(x.state.c, y.state.c, atol=1e-5)
    one = gen.generate("KING:", max_new_tokens=30, temperature=0.9, seed=7)
    assert one.token_ids == step[0].token_ids  # one row on CPU: the matrix-vector path


def test_the_gate_read_out_matches_the_model(awd_model_dir):
    from lstmgen.visualize import trace

    gen = lstmgen.load(awd_model_dir)
    tr = trace(gen, "KING:\nthe queen")
    with torch.no_grad():
        _, (h, c) = gen.model(torch.tensor([tr.ids]))
    assert torch.allclose(tr.acts["h"][:, -1], h[:, 0], atol=1e-5)
    assert torch.allclose(tr.acts["c"][:, -1], c[:, 0], atol=1e-5)
    assert not tr.acts["h"][-1, :, 16:].any()  # the top layer has 16 units; the rest of its row reads 0


def test_a_classifier_cannot_start_from_it(awd_model_dir, tmp_path):
    from lstmgen.classification import ClassifierRecipe, train_classifier

    data = tmp_path / "labels.csv"
    data.write_text("text,label\n" + "".join(f"the king {i},a\nthe queen {i},b\n" for i in range(20)))
    with pytest.raises(UserInputError, match="last_layer_size"):
        train_classifier(ClassifierRecipe(data=f"{data}:text:label", out=str(tmp_path / "clf"),
                                          init_from=str(awd_model_dir)))
