"""Checks that need a CUDA GPU: cuDNN against the CPU paths, the training fast path, decoding on the GPU.

Skipped without a GPU; `benchmarks/gpu_session.sh` runs them first on a machine that has one.
"""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmgen
from lstmgen.data import TokenArray
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.nn import LSTM
from lstmgen.training import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_float32():
    """cuDNN may use TF32 for recurrent layers; these comparisons are about the code, not the format."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def test_packed_bilstm_on_cuda_equals_the_cpu_segments_path():
    torch.manual_seed(0)
    m = LSTM(8, 16, 2, bidirectional=True, batch_first=True)
    x = torch.randn(5, 11, 8)
    lengths = torch.tensor([11, 3, 7, 7, 1])
    outs = []
    for device in ("cpu", "cuda"):
        m.to(device)
        y, (h, c) = m(pack_padded_sequence(x.to(device), lengths, batch_first=True, enforce_sorted=False))
        outs.append([pad_packed_sequence(y, batch_first=True)[0].cpu(), h.cpu(), c.cpu()])
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)


def make_trainer(tmp_path, **cfg):
    ids = np.array([(i * 5 + i // 7) % 13 for i in range(6000)], dtype=np.uint16)
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=13, hidden_size=64, num_layers=2, dropout=0.0))
    config = TrainConfig(batch_size=8, bptt=32, max_steps=60, eval_every=30, log_every=10, warmup_steps=5,
                         lr=3e-3, device="cuda", **cfg)
    return Trainer(model, TokenArray(ids, len(ids)), TokenArray(ids[:800], 800), config, tmp_path)


@pytest.mark.parametrize("amp", [False, True])
def test_training_on_cuda_learns_with_the_streams_on_the_gpu(tmp_path, amp):
    t = make_trainer(tmp_path, amp=amp)
    assert t.deferred and t.task.batcher.grid is not None and t.task.batcher.grid.is_cuda
    t.fit()
    # 60 steps of a 2 x 64 LSTM: on an H200 both runs reached 1.89 nats against 2.56 for a uniform guess
    assert t.best["valid_loss"] < 0.8 * np.log(13)


def test_a_nan_step_on_cuda_is_skipped_on_the_device(tmp_path, capsys):
    t = make_trainer(tmp_path)
    calls = []

    def poison(module, inputs, output):
        if module.training:
            calls.append(1)
            if len(calls) == 7:
                return output * float("nan")
    t.model.decoder.register_forward_hook(poison)
    t.fit()
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert "1 step(s) up to step 10 had a non-finite loss or gradient" in capsys.readouterr().err


def test_generation_on_cuda_matches_cpu():
    cpu = lstmgen.load("shakespeare-char")
    gpu = lstmgen.load("shakespeare-char", device="cuda")
    prompt = "ROMEO:\nWhat light"
    a = cpu.generate(prompt, max_new_tokens=40, temperature=0)
    b = gpu.generate(prompt, max_new_tokens=40, temperature=0)
    assert a.completion[:20] == b.completion[:20]  # greedy: the same text, at least until a near-tie
    streamed = "".join(gpu.stream(prompt, max_new_tokens=60, temperature=0.8, seed=3))
    assert streamed == gpu.generate(prompt, max_new_tokens=60, temperature=0.8, seed=3).completion
    many = gpu.generate([prompt] * 64, max_new_tokens=30, temperature=1.0, seed=1)
    assert len(many) == 64 and all(len(r.token_ids) == 30 or r.finish_reason != "length" for r in many)


@pytest.mark.parametrize("opts", [dict(temperature=0.8, seed=3), dict(temperature=1.0, top_k=10, top_p=0.9, seed=4),
                                  dict(temperature=0), dict(temperature=0.9, min_p=0.1, seed=5, eos_token_id=1)])
def test_cuda_graph_blocks_give_the_eager_tokens(opts):
    gpu = lstmgen.load("shakespeare-char", device="cuda")
    prompts = ["ROMEO:\nWhat light", "KING:", "O"]

    def run(dec):
        job = gpu.new_job(dec, prompts, dict(max_new_tokens=70, **opts))
        list(job.run())
        return job.results()

    steps = run(lstmgen.generation.SamplingDecoder(gpu.model, block_steps=0))
    dec = lstmgen.generation.SamplingDecoder(gpu.model, block_steps=16)
    # a shape's first use runs eagerly, the second captures its graph, the third replays it
    for _ in range(3):
        got = run(dec)
        assert [r.token_ids for r in got] == [r.token_ids for r in steps]
        assert [r.finish_reason for r in got] == [r.finish_reason for r in steps]
        for a, b in zip(got, steps):
            assert torch.allclose(a.state.h, b.state.h, atol=1e-5) and a.state.pending == b.state.pending
    assert dec._blocks.blocks and all(b.graph is not None for b in dec._blocks.blocks.values())


def test_cuda_graph_blocks_of_a_narrower_top_layer_give_the_eager_tokens():
    """AWD-LSTM's shape (last_layer_size): the top layer's state is written into part of the graph's buffers."""
    from lstmgen.pipelines import TextGenerator

    tok = lstmgen.load("shakespeare-char").tokenizer
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=tok.vocab_size, embed_size=32, hidden_size=96, num_layers=3,
                                   last_layer_size=32)).to("cuda").eval()
    gen = TextGenerator(model, tok)

    def run(dec):
        job = gen.new_job(dec, ["ROMEO:", "O", "KING:\nNo"], dict(max_new_tokens=50, temperature=0.9, seed=2))
        list(job.run())
        return job.results()

    steps = run(lstmgen.generation.SamplingDecoder(model, block_steps=0))
    dec = lstmgen.generation.SamplingDecoder(model, block_steps=16)
    for _ in range(3):  # eager, capture, replay
        got = run(dec)
        assert [r.token_ids for r in got] == [r.token_ids for r in steps]
        for a, b in zip(got, steps):
            assert torch.allclose(a.state.h, b.state.h, atol=1e-5) and torch.allclose(a.state.c, b.state.c, atol=1e-5)
    assert all(b.graph is not None for b in dec._blocks.blocks.values())


def test_training_from_host_batches_matches_the_streams_on_the_gpu(tmp_path):
    """A token stream too big for the GPU stays on the host: its windows go over in pinned memory,
    asynchronously, and the run is the one the streams on the GPU give."""
    on_gpu = make_trainer(tmp_path / "gpu")
    on_gpu.fit()
    from_host = make_trainer(tmp_path / "host")
    from_host.task.batcher.grid = None  # as when the streams do not fit (StreamBatcher.to_device)
    assert not from_host.task.batch(0, 0)[0].is_cuda
    from_host.fit()
    assert abs(from_host.best["valid_loss"] - on_gpu.best["valid_loss"]) < 1e-3


def test_cache_and_dynamic_evaluation_on_cuda_equal_the_cpu():
    """Dynamic evaluation needs gradients in eval mode, which cuDNN refuses: it runs with cuDNN off there."""
    from lstmgen.training.cache import CacheConfig, cache_metrics, stream_outputs
    from lstmgen.training.dynamic import DynamicConfig, dynamic_loss, gradient_rms

    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=13, hidden_size=32, num_layers=2, dropout=0.0))
    ids = np.array([(i * 5 + i // 7) % 13 for i in range(700)], dtype=np.uint16)
    cfg = DynamicConfig(lr=1e-4, lam=0.02, bptt=10, stat_batch=8)
    out = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        rms = gradient_rms(model, ids[:400], cfg, device)
        cache = cache_metrics(*stream_outputs(model, ids[400:], device), CacheConfig(50, 0.5, 0.2))
        out[device] = (dynamic_loss(model, ids[400:], rms, cfg, device)[0], cache["loss"])
    assert out["cuda"] == pytest.approx(out["cpu"], rel=1e-4)
