"""AWD-LSTM's regularizers and optimizer, each against its definition: locked and embedding dropout, weight
drop through the fused kernel, AR/TAR, variable-length BPTT, NT-ASGD, the Mogrifier LSTM, and a language
model trained with all of them (resumable, and fine-tuned from its own folder)."""
import json
from pathlib import Path

import pytest
import torch

from lstmgen.data.batching import StreamBatcher
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.nn import LSTM
from lstmgen.nn.regularizers import activation_penalties, embedding_dropout, locked_dropout
from lstmgen.training import TrainConfig, Trainer


def test_locked_dropout_keeps_one_mask_over_time():
    x = torch.ones(4, 50, 32)
    y = locked_dropout(x, 0.5, True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same units dropped at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 0.3 < float((y == 0).float().mean()) < 0.7
    assert torch.equal(locked_dropout(x, 0.5, False), x)
    t = locked_dropout(torch.ones(50, 4, 32), 0.5, True, batch_first=False)
    assert torch.equal(t, t[:1].expand_as(t))


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(100, 8)
    ids = torch.arange(100).repeat(3, 1)
    out = embedding_dropout(emb, ids, 0.5, True)
    dropped = (out == 0).all(-1)  # (3, 100): a dropped word is dropped wherever it appears
    assert torch.equal(dropped, dropped[:1].expand_as(dropped)) and 20 < int(dropped[0].sum()) < 80
    kept = ~dropped[0]
    assert torch.allclose(out[0, kept], 2 * emb.weight[kept])
    assert torch.equal(embedding_dropout(emb, ids, 0.5, False), emb(ids))


def _pair(**kw):
    torch.manual_seed(0)
    fused = LSTM(6, 12, 2, batch_first=True, **kw).train()
    ref = LSTM(6, 12, 2, batch_first=True, backend="reference", **kw).train()
    ref.load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.parametrize("kw", [dict(weight_drop=0.5), dict(locked_dropout=True, dropout=0.4)])
def test_weight_drop_and_locked_layers_match_the_equations(kw):
    """The fused path (torch's kernel given the dropped matrices; layer by layer for locked dropout)
    computes what the reference equations compute with the same random masks."""
    fused, ref = _pair(**kw)
    x = torch.randn(3, 9, 6)
    torch.manual_seed(1)
    y_f, (h_f, _) = fused(x)
    torch.manual_seed(1)
    y_r, (h_r, _) = ref(x)
    assert torch.allclose(y_f, y_r, atol=1e-5) and torch.allclose(h_f, h_r, atol=1e-5)
    assert not torch.allclose(y_f, fused.eval()(x)[0], atol=1e-3)  # training really dropped something
    fused.train()
    y_f.sum().backward()
    assert fused.weight_hh_l0.grad is not None and fused.weight_hh_l0.grad.abs().sum() > 0
    assert fused._flat_weights[1] is fused.weight_hh_l0  # the module's own weights are back in place


def test_weight_drop_drops_each_hidden_matrix_once_per_call():
    torch.manual_seed(0)
    m = LSTM(4, 8, 1, batch_first=True, weight_drop=0.9).train()
    x = torch.randn(2, 30, 4)
    torch.manual_seed(3)
    y, _ = m(x)
    torch.manual_seed(3)
    dropped = torch.nn.functional.dropout(m.weight_hh_l0, 0.9, True)
    plain = LSTM(4, 8, 1, batch_first=True).eval()
    plain.load_state_dict({**m.state_dict(), "weight_hh_l0": dropped})
    assert torch.allclose(y, plain(x)[0], atol=1e-5)  # one mask for all 30 steps


def test_activation_penalties():
    raw = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    dropped = torch.tensor([[[0.0, 4.0], [6.0, 0.0]]])
    assert float(activation_penalties(raw, dropped, 2.0, 0.0)) == pytest.approx(2 * (16 + 36) / 4)
    assert float(activation_penalties(raw, dropped, 0.0, 1.0)) == pytest.approx((4 + 9) / 2)


def test_variable_bptt_windows():
    b = StreamBatcher(torch.arange(10_001).numpy(), batch_size=4, bptt=70)
    w = b.variable_windows(seed=5)
    assert w == b.variable_windows(seed=5) and w != b.variable_windows(seed=6)
    assert w[0][0] == 0 and all(s1 + n1 == s2 for (s1, n1), (s2, _) in zip(w, w[1:]))
    assert sum(n for _, n in w) == b.stream_len
    lengths = [n for _, n in w[:-1]]
    assert 5 <= min(lengths) and max(lengths) <= 90 and 55 < sum(lengths) / len(lengths) < 72
    x, y = b.span(w[1][0], w[1][1])
    assert x.shape == (4, w[1][1]) and torch.equal(x[:, 1:], y[:, :-1])


def test_mogrifier_steps_equal_the_sequence():
    torch.manual_seed(0)
    lm = LanguageModel(LMConfig(vocab_size=30, hidden_size=16, num_layers=2, dropout=0.0, backend="reference",
                                mogrifier_rounds=5)).eval()
    ids = torch.randint(0, 30, (2, 6))
    full, _ = lm(ids)
    state = lm.init_state(2)
    for t in range(6):
        step, state = lm.step(ids[:, t], state)
        assert torch.allclose(step, full[:, t], atol=1e-5)
    with pytest.raises(ValueError, match="reference"):
        LMConfig(vocab_size=30, mogrifier_rounds=2)


def test_ntasgd_triggers_and_averages(tmp_path):
    from lstmgen.data import TokenArray

    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=20, hidden_size=8, num_layers=1))
    tokens = TokenArray(torch.randint(0, 20, (500,)).numpy(), 500)
    t = Trainer(model, tokens, tokens, TrainConfig(optimizer="ntasgd", nonmono=2, batch_size=2, bptt=5, lr=1.0),
                tmp_path)
    for loss in (5.0, 4.0, 3.0, 3.5, 3.6):
        t._maybe_trigger({"valid_loss": loss})
        assert t.avg is None
    t._maybe_trigger({"valid_loss": 3.7})  # worse than the best before the last 2 validations (3.0)
    assert t.avg is not None and t.avg.count == 1
    w0 = model.embedding.weight.detach().clone()
    with torch.no_grad():
        model.embedding.weight.add_(3.0)
    t.avg.fold()
    with torch.no_grad():
        model.embedding.weight.add_(3.0)
    t.avg.fold()
    assert torch.allclose(t.avg.mean["embedding.weight"], w0 + 3.0)  # mean of w0, w0 + 3, w0 + 6
    t.avg.swap()
    assert torch.allclose(model.embedding.weight, w0 + 3.0)


def test_an_averaged_run_resumes_where_it_stopped(tmp_path):
    """The running mean and its count go into the checkpoint: 10 + 10 resumed steps = 20 steps in one go."""
    from lstmgen.data import TokenArray

    tokens = TokenArray(torch.randint(0, 20, (2000,), generator=torch.Generator().manual_seed(0)).numpy(), 2000)

    def trainer(out, steps):
        torch.manual_seed(0)
        model = LanguageModel(LMConfig(vocab_size=20, hidden_size=8, num_layers=1, dropout=0.0))
        return Trainer(model, tokens, None, TrainConfig(optimizer="asgd", batch_size=2, bptt=5, lr=0.5,
                                                        max_steps=steps, warmup_steps=0, schedule="constant",
                                                        log_every=5), out)

    whole = trainer(tmp_path / "whole", 20)
    whole.fit()
    trainer(tmp_path / "parts", 10).fit()
    rest = trainer(tmp_path / "parts", 20)
    assert rest.resume() and rest.avg.count == 11 and rest.step == 10
    rest.fit()
    assert whole.avg.count == rest.avg.count == 21
    for p, q in zip(whole.model.parameters(), rest.model.parameters()):  # both end on the averaged weights
        assert torch.allclose(p, q, atol=1e-6)


def test_awd_style_language_model_trains_resumes_and_fine_tunes(corpus_file, tmp_path):
    from lstmgen.recipes import LMRecipe, train_lm

    train = dict(batch_size=8, bptt=20, lr=5.0, optimizer="ntasgd", nonmono=1, ar=2.0, tar=1.0, variable_bptt=True,
                 max_steps=40, eval_every=10, log_every=5, warmup_steps=0, schedule="constant", clip=0.25,
                 weight_decay=1.2e-6)
    recipe = LMRecipe(data=str(corpus_file), out=str(tmp_path / "awd"), hidden_size=32, num_layers=3, embed_size=16,
                      dropout=0.4, dropout_input=0.65, dropout_hidden=0.3, dropout_embedding=0.1, weight_drop=0.5,
                      locked_dropout=True, train=TrainConfig(**train))
    result = train_lm(recipe, command="test")
    assert result["steps"] == 40 and result["metrics"]["loss"] < 4.0
    config = json.loads((tmp_path / "awd" / "config.json").read_text())
    assert config["model"]["weight_drop"] == 0.5 and config["model"]["locked_dropout"] is True
    log = [json.loads(line) for line in (tmp_path / "awd" / "training_log.jsonl").read_text().splitlines()]
    assert len({r["tokens_per_s"] > 0 for r in log}) == 1
    # fine-tuning stage: averaged SGD from the first step, starting from the folder's weights
    ft = LMRecipe(data=str(corpus_file), out=str(tmp_path / "ft"), init_from=str(tmp_path / "awd"),
                  dropout=0.4, train=TrainConfig(**{**train, "optimizer": "asgd", "max_steps": 10}))
    ft_result = train_lm(ft, command="test")
    assert ft_result["metrics"]["loss"] < result["metrics"]["loss"] + 0.05
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["model"]["num_layers"] == 3


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parent.parent / "configs").glob("*.toml")))
def test_presets_load(name):
    """Every preset fills its command's recipe and the training config without an unknown key."""
    from dataclasses import fields

    from lstmgen.classification import ClassifierRecipe
    from lstmgen.errors import UserInputError
    from lstmgen.presets import LM, load_settings, load_toml
    from lstmgen.recipes import LMRecipe
    from lstmgen.seq2seq_recipe import Seq2SeqRecipe

    command = load_toml(name)["command"]
    if command != LM:  # a task preset: its recipe takes every key (a TypeError names one it does not)
        cls = {"train classify": ClassifierRecipe, "train seq2seq": Seq2SeqRecipe}[command]
        recipe = cls.from_preset(name, data="x", out="x")
        assert recipe.train.lr == load_settings(name, command)["lr"]
        with pytest.raises(UserInputError, match=f"holds settings for `lstmgen {command}`"):
            load_settings(name, LM)
        return
    flat = load_settings(str(Path(__file__).parent.parent / "configs" / f"{name}.toml"), LM)
    recipe_keys = {f.name for f in fields(LMRecipe)}
    train_keys = {f.name for f in fields(TrainConfig)}
    assert set(flat) <= recipe_keys | train_keys
    recipe = LMRecipe(out="x", **{k: v for k, v in flat.items() if k in recipe_keys},
                      train=TrainConfig(**{k: v for k, v in flat.items() if k in train_keys}))
    LMConfig(vocab_size=10, **{k: getattr(recipe, k) for k in ("embed_size", "hidden_size", "num_layers",
                                                               "last_layer_size", "dropout", "weight_drop",
                                                               "locked_dropout")})
