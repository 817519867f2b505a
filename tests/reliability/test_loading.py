"""Loading reads only JSON and safetensors; every damaged folder is one clear error naming the file."""
import json
import pickle
import shutil

import pytest

import lstmgen
from lstmgen.errors import ModelFolderError


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    return d


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl", "last.ckpt"])
def test_pickle_files_are_refused_without_being_read(folder, name, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (folder / name).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFolderError, match=f"{name} is a pickle file"):
        lstmgen.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("damage, names", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors"),
    (lambda d: (d / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}'), "tokenizer.json"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "model": {**json.loads((d / "config.json").read_text())[
            "model"], "hidden_size": 32}})), "model.safetensors"),
    (lambda d: (d / "generation_config.json").write_text('{"temperature": -3}'), "generation_config.json"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json"),
])
def test_damaged_files_are_named(folder, damage, names):
    damage(folder)
    with pytest.raises(ModelFolderError, match=names):
        lstmgen.load(folder)
