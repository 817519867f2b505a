"""Shared fixtures. Every test gets a private user cache; data sets come from $LSTMGEN_DATA or are skipped."""
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(min(2, torch.get_num_threads()))
# CI runs the same examples every time (reproducible); a developer's runs explore new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

WORDS = ("the king and queen of the realm did speak to all their lords upon the hill where snow "
         "fell soft and white as any dove that flies before the storm of night").split()


def make_text(n_lines: int, seed: int = 0) -> str:
    """Verse-like text with a little structure for tiny models to learn."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 6 == 0:
            lines.append(rng.choice(["KING:", "QUEEN:", "LORD:"]))
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["LSTMGEN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("LSTMGEN_DATA")
    if not d or not Path(d).is_dir():
        pytest.skip("LSTMGEN_DATA is not set to the data folder (../shared/data); real-data test skipped")
    return Path(d)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "verse.txt"
    p.write_text(make_text(600), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, corpus_file) -> Path:
    """A small character model trained for a few seconds, shared by pipeline and CLI tests."""
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    out = tmp_path_factory.mktemp("models") / "tiny"
    recipe = LMRecipe(data=str(corpus_file), out=str(out), hidden_size=64, num_layers=2, dropout=0.1,
                      train=TrainConfig(batch_size=16, bptt=32, max_steps=300, eval_every=100, log_every=10,
                                        warmup_steps=5, lr=5e-3))
    train_lm(recipe, command="pytest fixture")
    return out


@pytest.fixture(scope="session")
def awd_model_dir(tmp_path_factory, corpus_file) -> Path:
    """A small model of AWD-LSTM's shape (a top layer as narrow as the embedding) and regularizers."""
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    out = tmp_path_factory.mktemp("models") / "awd"
    recipe = LMRecipe(data=str(corpus_file), out=str(out), embed_size=16, hidden_size=32, num_layers=3,
                      last_layer_size=16, dropout=0.3, dropout_embedding=0.1, weight_drop=0.3, locked_dropout=True,
                      train=TrainConfig(batch_size=8, bptt=24, max_steps=200, eval_every=100, log_every=20,
                                        warmup_steps=5, lr=2e-2, ar=2.0, tar=1.0))
    result = train_lm(recipe, command="pytest fixture")
    assert result["metrics"]["loss"] < 3.0  # it learns (uniform over this character set: about 3.4)
    return out


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium through Playwright (`playwright install` cannot download here).

    Per module, not per session: Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and `asyncio.run` in any later test (the server's soak test) would then fail."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (.ci/run does: apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); browser test skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()
