"""The language model and the Trainer: learning, truncated BPTT, logs, checkpoints, resume."""
import json
import math

import numpy as np
import pytest
import torch

from lstmgen.data import TokenArray, open_corpus, token_cache
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.tokenizers import Tokenizer
from lstmgen.training import TrainConfig, Trainer, evaluate_lm, lr_at
from lstmgen.errors import UserInputError
from lstmgen.training.checkpoint import load_checkpoint
from lstmgen.training.trainer import bf16_lstm_cpu


def tokens(ids) -> TokenArray:
    return TokenArray(np.asarray(ids, dtype=np.uint16), len(ids))


def test_tying_and_projection():
    tied = LanguageModel(LMConfig(vocab_size=50, hidden_size=32, num_layers=1))
    assert tied.decoder.weight is tied.embedding.weight and tied.proj is None
    proj = LanguageModel(LMConfig(vocab_size=50, embed_size=16, hidden_size=32, num_layers=1))
    assert proj.decoder.weight is proj.embedding.weight and proj.proj.weight.shape == (16, 32)
    logits, (h, c) = proj(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50) and h.shape == (1, 3, 32)
    untied = LanguageModel(LMConfig(vocab_size=50, hidden_size=32, num_layers=1, tie_weights=False))
    assert untied.num_parameters() == tied.num_parameters() + 50 * 32


def test_reference_backend_gives_the_same_lm():
    torch.manual_seed(0)
    m = LanguageModel(LMConfig(vocab_size=20, hidden_size=16, num_layers=2)).eval()
    x = torch.randint(0, 20, (2, 9))
    a, _ = m(x)
    m.lstm.backend = "reference"
    b, _ = m(x)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("batch", [1, 4])
def test_one_step_decode_path_equals_forward(backend, batch):
    torch.manual_seed(0)
    m = LanguageModel(LMConfig(vocab_size=20, embed_size=8, hidden_size=16, num_layers=3, backend=backend)).eval()
    x = torch.randint(0, 20, (batch, 6))
    with torch.no_grad():
        full, (h_full, c_full) = m(x)
        _, state = m(x[:, :5])
        step, (h, c) = m.step(x[:, 5], state)
    assert torch.allclose(step, full[:, -1], atol=1e-5)
    assert torch.allclose(h, h_full, atol=1e-6) and torch.allclose(c, c_full, atol=1e-6)


def test_one_row_step_follows_weight_changes():
    """The one-row CPU step keeps [W_ih | W_hh] side by side; changing the weights in place (an optimizer
    step, load_state_dict) must not leave it stale."""
    torch.manual_seed(0)
    m = LanguageModel(LMConfig(vocab_size=20, embed_size=8, hidden_size=16, num_layers=2)).eval()
    x = torch.randint(0, 20, (1, 6))
    with torch.no_grad():
        m.step(x[:, 0], m.init_state(1))  # makes the side-by-side copy
        for p in m.lstm.parameters():
            p.mul_(1.5)
        full, _ = m(x)
        _, state = m(x[:, :5])
        step, _ = m.step(x[:, 5], state)
    assert torch.allclose(step, full[:, -1], atol=1e-5)


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, max_steps=100)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1) and lr_at(cfg, 9, 0.09) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55) and lr_at(cfg, 100, 1.0) == pytest.approx(0.1)


def test_learns_a_periodic_sequence(tmp_path):
    """Learning test (always runs): a period-7 sequence drops below 0.05 nats within 150 steps."""
    ids = [i % 7 for i in range(6000)]
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=7, hidden_size=32, num_layers=1, dropout=0.0))
    cfg = TrainConfig(batch_size=8, bptt=20, lr=1e-2, max_steps=150, eval_every=50, log_every=10, warmup_steps=5)
    summary = Trainer(model, tokens(ids), tokens(ids[:800]), cfg, tmp_path).fit()
    assert summary["best"]["valid_loss"] < 0.05


def test_learns_tinyshakespeare_excerpt(tmp_path, data_dir):
    """Learning test on real text: a 1x128 char LSTM on the first 200k characters of tinyshakespeare
    goes from ln(65) = 4.17 to below 2.05 nats/char on held-out text within 600 steps (1.94 measured on a
    2-core CPU, about 7 s)."""
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()[:200_000]
    p = tmp_path / "excerpt.txt"
    p.write_text(text)
    corpus = open_corpus(str(p))
    tok = Tokenizer.train("char", corpus.chunks("train"))
    train, valid = token_cache(corpus, "train", tok), token_cache(corpus, "valid", tok)
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=tok.vocab_size, hidden_size=128, num_layers=1, dropout=0.0))
    cfg = TrainConfig(batch_size=32, bptt=64, lr=4e-3, max_steps=600, eval_every=100, log_every=20,
                      warmup_steps=10)
    summary = Trainer(model, train, valid, cfg, tmp_path / "run").fit()
    assert summary["best"]["valid_loss"] < 2.05


def _trainer(tmp_path, name, max_steps=40):
    ids = [(i * 7 + i // 13) % 11 for i in range(4000)]
    torch.manual_seed(123)
    model = LanguageModel(LMConfig(vocab_size=11, hidden_size=24, num_layers=2, dropout=0.3))
    cfg = TrainConfig(batch_size=4, bptt=16, max_steps=max_steps, eval_every=10, log_every=5, warmup_steps=3)
    return Trainer(model, tokens(ids), tokens(ids[:500]), cfg, tmp_path / name)


def test_ctrl_c_then_resume_is_bit_exact(tmp_path):
    full = _trainer(tmp_path, "full")
    full.fit()
    part = _trainer(tmp_path, "part")
    window, calls = part.task.batcher.window, []

    def interrupt_at_step_23(k):  # Ctrl-C arrives while step 23 is being fetched
        calls.append(k)
        if len(calls) == 23:
            raise KeyboardInterrupt
        return window(k)

    part.task.batcher.window = interrupt_at_step_23
    assert part.fit()["interrupted"] and part.step == 22
    resumed = _trainer(tmp_path, "part")
    assert resumed.resume() and resumed.step == 22
    resumed.fit()
    ck_full, _ = load_checkpoint(tmp_path / "full" / "checkpoint.safetensors")
    ck_res, _ = load_checkpoint(tmp_path / "part" / "checkpoint.safetensors")
    for k in ck_full:
        if k.startswith(("model.", "best.", "optim.", "state.")):
            assert torch.equal(ck_full[k], ck_res[k]), k
    assert resumed.step == 40
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "training_log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]


@pytest.mark.parametrize("cpu_amp", [True, False])
def test_bf16_autocast_on_the_cpu_when_asked(tmp_path, cpu_amp):
    """cpu_amp runs the CPU training step under bf16 autocast (the carried state then comes out of the LSTM in
    bf16); without it the CPU trains in float32. Either way it learns."""
    ids = [i % 7 for i in range(6000)]
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=7, hidden_size=32, num_layers=2, dropout=0.0))
    cfg = TrainConfig(batch_size=8, bptt=20, lr=1e-2, max_steps=150, eval_every=50, log_every=10, warmup_steps=5,
                      cpu_amp=cpu_amp, device="cpu")
    if cpu_amp and not bf16_lstm_cpu():  # an AVX2 CPU: oneDNN has no bf16 LSTM, so a one-line error at once
        with pytest.raises(UserInputError, match="cannot run the LSTM in bf16"):
            Trainer(model, tokens(ids), tokens(ids[:800]), cfg, tmp_path)
        return
    trainer = Trainer(model, tokens(ids), tokens(ids[:800]), cfg, tmp_path)
    assert trainer.fit()["best"]["valid_loss"] < 0.15  # from 1.95 (uniform); bf16 ends near 0.07, float32 0.01
    assert trainer.state[0].dtype == (torch.bfloat16 if cpu_amp else torch.float32)


def test_adamw_betas_are_settings(tmp_path):
    """beta1 = 0 (Melis et al.'s AdamW without momentum) reaches the optimizer from the config and the CLI, and
    still learns the periodic sequence."""
    from lstmgen.cli import build_parser
    from lstmgen.cli_lm import _settings

    ids = [i % 7 for i in range(6000)]
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=7, hidden_size=32, num_layers=1, dropout=0.0))
    cfg = TrainConfig(batch_size=8, bptt=20, lr=1e-2, max_steps=150, eval_every=50, log_every=10, warmup_steps=5,
                      beta1=0.0, beta2=0.999)
    trainer = Trainer(model, tokens(ids), tokens(ids[:800]), cfg, tmp_path)
    assert trainer.opt.param_groups[0]["betas"] == (0.0, 0.999)
    assert trainer.fit()["best"]["valid_loss"] < 0.05
    args = build_parser().parse_args(["train", "lm", "--data", "x", "--out", "y", "--beta1", "0"])
    assert _settings(args)["beta1"] == 0.0
    for bad in (dict(beta1=1.0), dict(beta2=-0.1)):
        with pytest.raises(UserInputError, match="beta"):
            TrainConfig(**bad)


def test_log_records_and_plot(tmp_path):
    trainer = _trainer(tmp_path, "log", 20)
    trainer.fit()
    records = [json.loads(line) for line in (trainer.out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        assert {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    assert "valid_loss" in records[1] and "valid_bpc" in records[1] and "valid_loss" not in records[0]
    assert (trainer.out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_early_stopping(tmp_path):
    ids = list(np.random.default_rng(0).integers(0, 30, 3000))  # noise: validation never improves for long
    model = LanguageModel(LMConfig(vocab_size=30, hidden_size=64, num_layers=1, dropout=0.0))
    cfg = TrainConfig(batch_size=4, bptt=16, lr=2e-2, max_steps=2000, eval_every=10, patience=3, warmup_steps=1)
    summary = Trainer(model, tokens(ids), tokens(ids[:400]), cfg, tmp_path).fit()
    assert summary["stopped_early"] and summary["steps"] < 2000


def test_evaluate_both_figures():
    torch.manual_seed(0)
    m = LanguageModel(LMConfig(vocab_size=5, hidden_size=8, num_layers=1))
    arr = tokens([i % 5 for i in range(700)])
    r = evaluate_lm(m, arr, window=64)
    assert r["loss"] == pytest.approx(math.log(5), abs=0.2) and "window64_loss" in r
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["bpc"] == pytest.approx(r["loss"] / math.log(2))


def test_same_seed_same_weights(tmp_path, corpus_file):
    from lstmgen.recipes import LMRecipe, train_lm

    def weights(name):
        recipe = LMRecipe(data=str(corpus_file), out=str(tmp_path / name), hidden_size=16, num_layers=1,
                          train=TrainConfig(batch_size=4, bptt=16, max_steps=6, eval_every=3, seed=5))
        train_lm(recipe, command="pytest")
        return (tmp_path / name / "model.safetensors").read_bytes()

    assert weights("a") == weights("b")


def _fit_steps(tmp_path, name, compile, regularized=False, steps=30, amp=True):
    ids = [(i * 7 + i // 13) % 11 for i in range(4000)]
    torch.manual_seed(5)
    reg = dict(dropout=0.2, weight_drop=0.3, locked_dropout=True, dropout_embedding=0.1) if regularized \
        else dict(dropout=0.0)
    model = LanguageModel(LMConfig(vocab_size=11, hidden_size=24, num_layers=2, **reg))
    cfg = TrainConfig(batch_size=4, bptt=16, max_steps=steps, eval_every=steps // 2, log_every=5, warmup_steps=3,
                      lr=1e-2, compile=compile, ar=1.0, tar=1.0, variable_bptt=regularized, amp=amp)
    trainer = Trainer(model, tokens(ids), tokens(ids[:500]), cfg, tmp_path / name)
    return trainer, trainer.fit()


def test_compiled_training_follows_the_eager_one(tmp_path):
    """torch.compile around the LSTM changes how the ops run, not what they compute: without dropout
    (no random masks) and in float32 (bf16 rounds fused and separate ops differently) 30 steps give the same
    weights as eager ones."""
    eager, _ = _fit_steps(tmp_path, "eager", False, amp=False)
    compiled, _ = _fit_steps(tmp_path, "compiled", True, amp=False)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3, msg=name)


def test_compiled_training_with_every_regularizer(tmp_path):
    """Dropout masks, weight drop, AR/TAR and window lengths that change every step (variable BPTT, which
    makes the compiled code symbolic in the length) all work compiled, and the model learns as well as
    eagerly (some dropout masks differ: compiled code may draw its own random numbers)."""
    _, eager = _fit_steps(tmp_path, "eager", False, regularized=True, steps=60)
    _, compiled = _fit_steps(tmp_path, "compiled", True, regularized=True, steps=60)
    assert eager["best"]["valid_loss"] < 1.9 and compiled["best"]["valid_loss"] < 1.9  # ln 11 = 2.40
    assert abs(compiled["best"]["valid_loss"] - eager["best"]["valid_loss"]) < 0.15


def test_compile_is_for_language_models(tmp_path):
    from lstmgen.errors import UserInputError

    with pytest.raises(UserInputError, match="compile"):
        Trainer(torch.nn.Linear(2, 2), tokens([1, 2, 3] * 50), None, TrainConfig(compile=True), tmp_path)


def test_checkpoints_rarer_than_validations(tmp_path):
    """checkpoint_every spaces the checkpoints out while validation keeps its pace; the end writes one."""
    t = _trainer(tmp_path, "ckpt", max_steps=35)
    t.cfg.checkpoint_every = 20
    saved, save = [], t.save_checkpoint
    t.save_checkpoint = lambda: (saved.append(t.step), save())
    t.fit()
    log = [json.loads(line) for line in (tmp_path / "ckpt" / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "valid_loss" in r] == [10, 20, 30, 35] and saved == [20, 35]
    assert json.loads(load_checkpoint(tmp_path / "ckpt" / "checkpoint.safetensors")[1]["trainer"])["step"] == 35
