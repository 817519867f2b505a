"""The equations LSTM against torch.nn.LSTM's kernels, gradcheck, and state carrying."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmgen.errors import UserInputError
from lstmgen.nn import LSTM


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


def run(m, backend, x, hx):
    m.backend = backend
    m.zero_grad()
    y, (h, c) = m(x, hx)
    (y.sum() + 0.5 * h.pow(2).sum() + c.sum()).backward()
    grads = [p.grad.clone() for p in m.parameters()]
    return y, h, c, grads


@settings(max_examples=12, deadline=None)
@given(I=st.integers(1, 9), H=st.integers(1, 12), L=st.integers(1, 3), T=st.integers(1, 7),
       B=st.integers(1, 4), bi=st.booleans(), bf=st.booleans(), seed=st.integers(0, 10_000))
def test_backends_agree(I, H, L, T, B, bi, bf, seed):
    torch.manual_seed(seed)
    m = LSTM(I, H, L, batch_first=bf, bidirectional=bi)
    D = 2 if bi else 1
    x = torch.randn((B, T, I) if bf else (T, B, I))
    hx = (torch.randn(L * D, B, H), torch.randn(L * D, B, H))
    fused, ref = run(m, "fused", x, hx), run(m, "reference", x, hx)
    for a, b in zip(fused[:3], ref[:3]):
        assert rel_err(b, a) <= 1e-5
    for ga, gb in zip(fused[3], ref[3]):
        assert rel_err(gb, ga) <= 1e-5


def test_packed_sequences_agree():
    torch.manual_seed(0)
    m = LSTM(4, 6, 2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 7, 4)
    packed = pack_padded_sequence(x, torch.tensor([7, 3, 5]), batch_first=True, enforce_sorted=False)
    m.backend = "fused"
    y1, (h1, c1) = m(packed)
    m.backend = "reference"
    y2, (h2, c2) = m(packed)
    assert torch.allclose(y1.data, y2.data, atol=1e-6)
    assert torch.allclose(h1, h2, atol=1e-6) and torch.allclose(c1, c2, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(L=st.integers(1, 3), bi=st.booleans(), lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6),
       with_hx=st.booleans(), seed=st.integers(0, 10_000))
def test_packed_segments_equal_torchs_packed_path(L, bi, lengths, with_hx, seed):
    """On CPU a PackedSequence runs as fused calls over length segments; torch's own packed path (its
    generic per-step code) must give the same outputs, final states and gradients."""
    torch.manual_seed(seed)
    m = LSTM(3, 5, L, bidirectional=bi, batch_first=True).double()
    B, D = len(lengths), 2 if bi else 1
    x = torch.randn(B, max(lengths), 3, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(L * D, B, 5, dtype=torch.float64), torch.randn(L * D, B, 5, dtype=torch.float64)) \
        if with_hx else None
    results = []
    for forward in (m.forward, lambda p, h: torch.nn.LSTM.forward(m, p, h)):
        y, (h, c) = forward(pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                                 enforce_sorted=False), hx)
        padded, _ = pad_packed_sequence(y, batch_first=True)
        loss = padded.pow(2).sum() + h.sum() + 0.5 * c.pow(2).sum()
        results.append([padded, h, c, *torch.autograd.grad(loss, [x, *m.parameters()])])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10)


def test_gradcheck_reference_float64():
    torch.manual_seed(0)
    m = LSTM(2, 3, 2, bidirectional=True, backend="reference").double()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0, *params):
        y, (h, c) = torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], params)),
                                               (x, (h0, c0)))
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *[p.detach().requires_grad_() for p in m.parameters()]))


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_chunks_with_carried_state_equal_one_run(backend):
    torch.manual_seed(1)
    m = LSTM(5, 8, 2, batch_first=True, backend=backend)
    x = torch.randn(3, 11, 5)
    y_full, (h_full, c_full) = m(x)
    y1, s = m(x[:, :4])
    y2, (h, c) = m(x[:, 4:], s)
    assert torch.allclose(torch.cat([y1, y2], 1), y_full, atol=1e-6)
    assert torch.allclose(h, h_full, atol=1e-6) and torch.allclose(c, c_full, atol=1e-6)


def test_same_parameters_as_torch_lstm():
    ours = LSTM(6, 5, 2, bidirectional=True)
    theirs = torch.nn.LSTM(6, 5, 2, bidirectional=True)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 6)
    ours.backend = "reference"
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)


def test_unbatched_input_and_bad_backend():
    m = LSTM(3, 4, backend="reference")
    x = torch.randn(6, 3)
    y, (h, c) = m(x)
    assert y.shape == (6, 4) and h.shape == (1, 4)
    m.backend = "fused"
    y_fused, (h_fused, _) = m(x)
    assert torch.allclose(y, y_fused, atol=1e-6) and torch.allclose(h, h_fused, atol=1e-6)
    with pytest.raises(UserInputError):
        LSTM(3, 4, backend="cudnn-please")
