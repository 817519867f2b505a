"""NaN/inf in training: skipped steps, roll-back with a lower learning rate, nothing non-finite saved."""
import json

import numpy as np
import pytest
import torch

from lstmgen.data import TokenArray
from lstmgen.folder import state_dict_for_saving
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.training import TrainConfig, Trainer
from lstmgen.training.checkpoint import load_checkpoint


def make_trainer(tmp_path, **cfg):
    ids = np.array([(i * 5 + i // 7) % 13 for i in range(3000)], dtype=np.uint16)
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=13, hidden_size=16, num_layers=1, dropout=0.0))
    config = TrainConfig(batch_size=4, bptt=16, max_steps=30, eval_every=10, log_every=5, warmup_steps=2, **cfg)
    return Trainer(model, TokenArray(ids, len(ids)), TokenArray(ids[:400], 400), config, tmp_path)


def poison(trainer, bad_calls):
    """Make the decoder output NaN on the given training forward calls (1-based)."""
    calls = []

    def hook(module, inputs, output):
        if module.training:
            calls.append(1)
            if len(calls) in bad_calls:
                return output * float("nan")
    trainer.model.decoder.register_forward_hook(hook)


# adamw: fused, the check stays on the device and is read at log points; sgd: read back every step.
@pytest.mark.parametrize("optimizer,said", [("adamw", "1 step(s) up to step 10 had a non-finite loss or gradient"),
                                            ("sgd", "step 7: non-finite loss or gradient")])
def test_a_nan_step_is_skipped(tmp_path, capsys, optimizer, said):
    t = make_trainer(tmp_path, optimizer=optimizer)
    assert t.deferred == (optimizer == "adamw")
    clean = make_trainer(tmp_path / "clean", optimizer=optimizer)
    poison(t, {7})
    t.fit()
    clean.fit()
    assert t.lr_scale == 1.0 and t.step == 30
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert said in capsys.readouterr().err
    # the skipped step changed nothing else: the weights differ from a clean run's by one step's worth
    moved = max((a - b).abs().max().item() for a, b in zip(t.model.parameters(), clean.model.parameters()))
    assert 0 < moved < 0.5


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_bad_steps_in_a_row_roll_back_with_lower_lr(tmp_path, capsys, optimizer):
    t = make_trainer(tmp_path, max_bad_steps=3, optimizer=optimizer)
    poison(t, {14, 15, 16})
    t.fit()
    err = capsys.readouterr().err
    assert "3 bad steps in a row: rolled back to the last checkpoint at step 10" in err
    assert t.lr_scale == 0.5 and t.step == 30
    tensors, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
    assert json.loads(meta["trainer"])["lr_scale"] == 0.5
    records = [json.loads(line) for line in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert records[-1]["lr"] < records[1]["lr"]


def test_non_finite_weights_are_never_saved(tmp_path):
    t = make_trainer(tmp_path)
    t.save_checkpoint()
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with torch.no_grad():
        t.model.embedding.weight[0, 0] = float("inf")
    t.save_checkpoint()
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="NaN or inf"):
        state_dict_for_saving(t.model)
