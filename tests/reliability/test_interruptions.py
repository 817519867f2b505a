"""No lost training: SIGKILL at a random moment then --resume, Ctrl-C, and bad output folders."""
import random
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from lstmgen.cli import main

from . import default_sigint


def train_cmd(corpus, out, *extra):
    return [sys.executable, "-m", "lstmgen", "train", "lm", "--data", str(corpus), "--out", str(out),
            "--hidden-size", "96", "--num-layers", "2", "--batch-size", "8", "--bptt", "32", "--max-steps", "240",
            "--eval-every", "10", "--log-every", "10", "--seed", "9", "--dropout", "0.2", *extra]


def start_and_wait_for_checkpoint(corpus, out, delay):
    proc = subprocess.Popen(train_cmd(corpus, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not (out / "checkpoint.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.02)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return proc


def test_sigkill_at_a_random_moment_then_resume_is_bit_exact(tmp_path, corpus_file):
    full = subprocess.run(train_cmd(corpus_file, tmp_path / "full"), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    delay = random.Random().uniform(0.0, 1.0)
    proc = start_and_wait_for_checkpoint(corpus_file, tmp_path / "killed", delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(train_cmd(corpus_file, tmp_path / "killed", "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "full" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoint.safetensors"))
    for k in a:
        if k.startswith(("model.", "best.", "optim.", "state.")):
            assert (a[k] == b[k]).all(), f"{k} differs after kill at +{delay:.2f}s and resume"
    final = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("full", "killed")]
    assert final[0] == final[1]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, corpus_file):
    proc = start_and_wait_for_checkpoint(corpus_file, tmp_path / "run", 0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" in err
    assert (tmp_path / "run" / "checkpoint.safetensors").exists() and (tmp_path / "run" / "model.safetensors").exists()
    resumed = subprocess.run(train_cmd(corpus_file, tmp_path / "run", "--resume"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_unusable_output_folders_are_found_before_training(tmp_path, corpus_file, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(tmp_path / "a-file" / "run")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**5, 10**5))
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "not enough free space" in err and not (tmp_path / "full" / "training_log.jsonl").exists()


def test_a_bug_exits_1_with_its_traceback(tmp_path):
    code = ("import sys, lstmgen.cli as c\n"
            "def broken(args): raise RuntimeError('a bug')\n"
            "c.cmd_datasets = broken\n"
            "sys.exit(c.main(['datasets', 'list']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "RuntimeError: a bug" in r.stderr
