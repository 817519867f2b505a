"""Distributed training under torchrun: 2 CPU processes (gloo) end with identical parameters and a lower
loss, rank 0 alone writes, and a run resumes with another number of processes."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd, cwd, timeout=240):
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


SCRIPT = textwrap.dedent('''
    import sys, torch
    from safetensors.torch import save_file
    from lstmgen.data import TokenArray
    from lstmgen.models import LanguageModel, LMConfig
    from lstmgen.training import TrainConfig, Trainer

    out = sys.argv[1]
    ids = torch.arange(12).repeat(700).numpy()  # a counting text: the next token is always known
    tokens = TokenArray(ids, len(ids))
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=12, hidden_size=32, num_layers=2, dropout=0.1))
    cfg = TrainConfig(batch_size=4, bptt=20, lr=1e-2, max_steps=60, eval_every=30, log_every=10, warmup_steps=0,
                      compile=sys.argv[2] == "compile")
    t = Trainer(model, tokens, tokens, cfg, out)
    assert t.dist.world == 2, t.dist
    t.fit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "decoder.weight"},
              f"{out}/rank{t.dist.rank}.safetensors")
''')


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_two_processes_train_the_same_model(tmp_path, mode):
    from safetensors.torch import load_file

    (tmp_path / "ddp.py").write_text(SCRIPT)
    _run(TORCHRUN + [str(tmp_path / "ddp.py"), str(tmp_path / "run"), mode], tmp_path)
    a, b = (load_file(str(tmp_path / "run" / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]  # one writer: each step logged once
    assert log[-1]["loss"] < 0.5 * log[0]["loss"] and "valid_loss" in log[-1]


BUDGET_SCRIPT = textwrap.dedent('''
    import sys, time, torch
    from lstmgen.data import TokenArray
    from lstmgen.models import LanguageModel, LMConfig
    from lstmgen.training import TrainConfig, Trainer

    out = sys.argv[1]
    ids = torch.arange(12).repeat(700).numpy()
    tokens = TokenArray(ids, len(ids))
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=12, hidden_size=16, num_layers=1, dropout=0.0))
    cfg = TrainConfig(batch_size=4, bptt=10, lr=1e-2, max_minutes=0.05, eval_every=10**6, log_every=10**6,
                      warmup_steps=0)
    t = Trainer(model, tokens, None, cfg, out)
    if t.dist.rank == 1:  # one slow rank: its clock runs ahead of the other's
        model.register_forward_hook(lambda *a: time.sleep(0.004 + 0.004 * (t.step % 3 == 0)))
    t0 = time.perf_counter()
    t.fit()
    print(f"rank {t.dist.rank} steps {t.step} wall {time.perf_counter() - t0:.2f}", flush=True)
''')


def test_a_time_budget_ends_every_rank_at_the_same_step(tmp_path):
    (tmp_path / "budget.py").write_text(BUDGET_SCRIPT)
    r = _run(TORCHRUN + [str(tmp_path / "budget.py"), str(tmp_path / "run")], tmp_path)
    lines = sorted(line.split() for line in r.stdout.splitlines() if line.startswith("rank "))
    assert [x[1] for x in lines] == ["0", "1"], r.stdout
    steps = {x[3] for x in lines}
    assert len(steps) == 1, lines  # a rank that stopped alone would leave the other hanging
    assert all(3.0 <= float(x[5]) < 12 for x in lines)  # the 3-second budget, not much more


@pytest.mark.parametrize("nothing", [None])
def test_cli_under_torchrun_and_resume_with_another_world_size(tmp_path, corpus_file, nothing):
    out = tmp_path / "lm"
    flags = ["--data", str(corpus_file), "--tokenizer", "char", "--hidden-size", "32", "--num-layers", "1",
             "--batch-size", "4", "--bptt", "16", "--eval-every", "10", "--log-every", "5", "--warmup-steps", "0"]
    _run(TORCHRUN + ["-m", "lstmgen", "train", "lm", "--out", str(out), "--max-steps", "20"] + flags, tmp_path)
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.safetensors").is_file()
    first = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert first == [5, 10, 15, 20]
    r = _run([sys.executable, "-m", "lstmgen", "train", "lm", "--out", str(out), "--max-steps", "30", "--resume"]
             + flags, tmp_path)
    assert "instead of 2" in r.stderr  # one process now: the carried state restarts, the run goes on
    steps = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]
