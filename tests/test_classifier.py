"""The text classifier: packed sequences, pooling, labelled data with fixed splits and clear errors, training
on a small synthetic task, the pipeline, the CLI and the server's /v1/classify."""
import json
import random

import pytest
import torch

import lstmgen
from lstmgen.classification import ClassifierRecipe, TextPrep, normalize, train_classifier
from lstmgen.data.labelled import open_labelled
from lstmgen.errors import UserInputError
from lstmgen.models.classifier import ClassifierConfig, TextClassifierModel
from lstmgen.training.metrics import classification_report

POS = "good great wonderful superb lovely excellent brilliant".split()
NEG = "bad awful terrible boring dull poor horrible".split()
FILLER = "the movie film plot actor story scene was and it a of".split()


def write_reviews(path, n=1500, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            words = [rng.choice(FILLER) for _ in range(rng.randint(5, 30))]
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randint(0, len(words)), rng.choice(POS if label == "pos" else NEG))
            f.write(json.dumps({"text": " ".join(words).capitalize() + ".", "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    data = write_reviews(d / "reviews.jsonl")
    recipe = ClassifierRecipe.from_preset(None, data=f"{data}:text:label", out=str(d / "model"), hidden_size=32,
                                          embed_size=32, train=dict(batch_size=32, max_epochs=3, lr=5e-3))
    return train_classifier(recipe, command="test"), d / "model"


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "attention", "concat"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_prediction(pooling, bidirectional):
    torch.manual_seed(0)
    m = TextClassifierModel(ClassifierConfig(vocab_size=50, num_labels=3, embed_size=8, hidden_size=6,
                                             num_layers=2, bidirectional=bidirectional, pooling=pooling)).eval()
    short = torch.randint(1, 50, (1, 5))
    batch = torch.randint(1, 50, (3, 12))
    batch[1, :5] = short[0]
    batch[1, 5:] = 0  # padding
    alone = m(short, torch.tensor([5]))
    together = m(batch, torch.tensor([12, 5, 9]))
    assert together.shape == (3, 3) and torch.allclose(alone[0], together[1], atol=1e-6)


def test_binary_head_and_bad_configs():
    m = TextClassifierModel(ClassifierConfig(vocab_size=20, num_labels=2, binary=True))
    assert m(torch.randint(0, 20, (4, 7)), torch.tensor([7, 3, 1, 5])).shape == (4, 1)
    for bad in (dict(pooling="sum"), dict(num_labels=1), dict(binary=True, num_labels=3), dict(dropout=2.0)):
        with pytest.raises(UserInputError):
            ClassifierConfig(vocab_size=20, **{"num_labels": 2, **bad})


def test_text_prep_follows_keras():
    assert normalize("Great, (really) GREAT!", "keras").split() == ["great", "really", "great"]
    tok = lstmgen.tokenizers.Tokenizer.train("word", ["a b c d e f"], vocab_size=20)
    ids = tok.encode("a b c d e f")
    assert TextPrep("keras", 3, "pre").ids(tok, "a b c d e f") == ids[-3:]
    assert TextPrep("keras", 3, "post").ids(tok, "a b c d e f") == ids[:3]


def test_metrics_by_hand():
    gold = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    r = classification_report(gold, pred, 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    # class 0: p 1/2 r 1/2 f 1/2; class 1: p 2/3 r 1 f 4/5; class 2: p 1 r 1/2 f 2/3
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # a class in neither the gold labels nor the predictions does not count (scikit-learn's macro average):
    # all right on a test set that holds one class is macro-F1 1, not 1/3
    one = classification_report(torch.tensor([2, 2]), torch.tensor([2, 2]), 3)
    assert one["accuracy"] == 1.0 and one["macro_f1"] == 1.0
    # a class predicted but never true counts, with F1 0
    assert classification_report(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)["macro_f1"] == pytest.approx(
        (2 / 3 + 0) / 2)


def test_labelled_files_splits_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\n" + "".join(f"text {i},{'a' if i % 2 else 'b'}\n" for i in range(40)))
    c = open_labelled(f"{p}:text:label")
    assert c.labels == ["a", "b"] and [len(c.splits[s]) for s in ("train", "valid", "test")] == [32, 4, 4]
    assert c.splits["test"][0] == ("text 9", "a")  # row i % 10 == 9 is test
    folds = list(c.folds(5))
    assert all(len(tr) == 32 and len(te) == 8 for tr, te in folds)
    assert sorted(t for _, te in folds for t, _ in te) == sorted(f"text {i}" for i in range(40))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    with pytest.raises(UserInputError, match=r"bad.jsonl:2"):
        open_labelled(f"{bad}:text:label")
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "  ", "label": "b"}\n')
    with pytest.raises(UserInputError, match=r"bad.jsonl:2: the text is empty"):
        open_labelled(f"{bad}:text:label")
    with pytest.raises(UserInputError, match="no column 'body'"):
        open_labelled(f"{p}:body:label")
    one = tmp_path / "one.csv"
    one.write_text("text,label\nx,a\ny,a\n")
    with pytest.raises(UserInputError, match="two or more"):
        open_labelled(f"{one}:text:label")


def test_rt_polarity_fixed_split(data_dir):
    c = open_labelled("rt-polarity")
    assert [len(c.splits[s]) for s in ("train", "valid", "test")] == [8530, 1066, 1066]
    assert c.labels == ["neg", "pos"]
    from lstmgen.data import open_corpus  # the same texts, labels dropped, as a language-model corpus

    lm_text = open_corpus("rt-polarity")
    assert len(lm_text.text("train").splitlines()) == 8530 and len(lm_text.text("test").splitlines()) == 1066


def test_learns_and_round_trips(trained, tmp_path):
    result, folder = trained
    assert result["metrics"]["test"]["accuracy"] > 0.95
    clf = lstmgen.load(folder)
    out = clf.predict(["A wonderful film.", "The plot was dull and the actor awful."])
    assert [o["label"] for o in out] == ["pos", "neg"]
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert (folder / "confusion.png").stat().st_size > 1000
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(folder / "README.md"))
    assert card.data.pipeline_tag == "text-classification"
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "macro_f1"}


def test_cli(trained, tmp_path, capsys):
    from lstmgen.cli import main

    _, folder = trained
    assert main(["classify", str(folder), "A superb story", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "pos"
    assert main(["classify", str(folder), "--json", "A superb story", "Awful"]) == 0  # texts after the options
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == ["pos", "neg"]
    with pytest.raises(SystemExit) as e:  # a misspelt option is not taken for a text
        main(["classify", str(folder), "--jsn", "A superb story"])
    assert e.value.code == 2 and "unrecognized arguments: --jsn" in capsys.readouterr().err
    assert main(["classify", str(folder)]) == 2
    # `lstmgen eval` scores a classifier folder on a split: the figures training reported for it
    result, _ = trained
    assert main(["eval", str(folder), "--data", f"{folder.parent / 'reviews.jsonl'}:text:label", "--split", "test",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == result["metrics"]["test"]["accuracy"] and r["labels"] == ["neg", "pos"]
    assert r["loss"] == pytest.approx(result["metrics"]["test"]["loss"])
    assert main(["eval", str(folder), "--data", f"{folder.parent / 'reviews.jsonl'}:text:label"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", str(folder), "--samples", "2"]) == 2  # language models only
    data = write_reviews(tmp_path / "r.jsonl", n=300)
    assert main(["train", "classify", "--data", f"{data}:text:label", "--out", str(tmp_path / "m"),
                 "--hidden-size", "16", "--embed-size", "16", "--max-epochs", "1"]) == 0
    assert "test: accuracy" in capsys.readouterr().out
    assert main(["train", "classify", "--data", f"{data}:text:label", "--preset", "nope"]) == 2


def test_cli_config_file_and_resume(tmp_path, capsys, monkeypatch):
    """`train classify` takes --config (flags win over it) and --resume, and a run stopped after 3 steps then
    resumed to 6 runs 3 more steps and ends with the weights, optimizer state and log of a straight 6-step run."""
    from lstmgen.cli import main
    from lstmgen.training.checkpoint import load_checkpoint
    from lstmgen.training.tasks import ClassifyTask

    data = write_reviews(tmp_path / "r.jsonl", n=300)
    cfg = tmp_path / "clf.toml"
    cfg.write_text(f'data = "{data}:text:label"\n[model]\nhidden-size = 8\nembed_size = 8\n'
                   '[train]\nschedule = "constant"\nwarmup_steps = 0\nmax_steps = 99\n')

    def train(out, steps, *more):
        return main(["train", "classify", "--config", str(cfg), "--out", str(tmp_path / out), "--max-steps",
                     str(steps), *more])

    assert train("straight", 6) == 0
    assert train("split", 3) == 0
    assert train("split", 3) == 2  # the folder holds a run: --resume or another --out
    assert "pass --resume" in capsys.readouterr().err
    assert train("split", 6, "--resume", "--hidden-size", "12") == 2  # another model than the run's
    assert "hidden_size 8 -> 12" in capsys.readouterr().err
    tok = tmp_path / "split" / "tokenizer.json"
    kept = tok.read_text()
    tok.write_text(kept.replace('"superb"', '"superbe"'))  # as if the data had another word
    assert train("split", 6, "--resume") == 2 and "another vocabulary" in capsys.readouterr().err
    tok.write_text(kept)
    fetched, batch = [], ClassifyTask.batch
    monkeypatch.setattr(ClassifyTask, "batch", lambda self, *a: fetched.append(a) or batch(self, *a))
    assert train("split", 6, "--resume") == 0
    assert len(fetched) == 3  # steps 4-6 only
    monkeypatch.undo()
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["model"]["hidden_size"] == 8 and saved["training"]["config"]["max_steps"] == 6
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    b, _ = load_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    for k in a:
        if k.startswith(("model.", "optim.")):
            assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "training_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    cfg.write_text(cfg.read_text() + "hiden_size = 4\n")
    assert train("typo", 2) == 2 and "unknown setting(s) hiden_size" in capsys.readouterr().err


def test_served_by_v1_classify(trained):
    from fastapi.testclient import TestClient

    from lstmgen.server import create_app

    _, folder = trained
    with TestClient(create_app({"sentiment": lstmgen.load(folder)})) as client:
        r = client.post("/v1/classify", json={"model": "sentiment", "input": ["a brilliant film", "awful"]})
        assert r.status_code == 200 and [d["label"] for d in r.json()["data"]] == ["pos", "neg"]
        r = client.post("/v1/classify", json={"model": "sentiment", "input": "x", "options": {"bogus": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "options"


# -- ULMFiT: a classifier made from a language model ------------------------------------------------------
def test_layer_groups_discriminative_rates_and_unfreezing():
    m = TextClassifierModel(ClassifierConfig(vocab_size=30, embed_size=8, hidden_size=6, num_layers=2,
                                             pooling="concat"))
    groups = m.layer_groups()
    assert sum(len(g) for g in groups) == len(list(m.parameters())) == len({id(p) for g in groups for p in g})
    assert groups[0][0] is m.out.weight and groups[-1][0] is m.embedding.weight
    assert [g["lr_scale"] for g in m.param_groups(2.6)] == pytest.approx([1, 1 / 2.6, 1 / 2.6 ** 2, 1 / 2.6 ** 3])
    m.unfreeze_top(2)
    assert [all(p.requires_grad for p in g) for g in groups] == [True, True, False, False]


def test_ulmfit_transfer_from_a_language_model(tmp_path):
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    data = write_reviews(tmp_path / "reviews.jsonl", n=600)
    train_lm(LMRecipe(data=f"{data}:text", out=str(tmp_path / "lm"), tokenizer="word", hidden_size=24, embed_size=16,
                      num_layers=2, dropout=0.1, train=TrainConfig(batch_size=8, bptt=20, max_steps=60, eval_every=30,
                                                                   warmup_steps=0, lr=5e-3)), command="test")
    lm = lstmgen.load(tmp_path / "lm")

    def fine_tune(out, weight_drop=0.0, **train):
        recipe = ClassifierRecipe.from_preset("ulmfit", data=f"{data}:text:label", out=str(tmp_path / out),
                                              init_from=str(tmp_path / "lm"), weight_drop=weight_drop,
                                              train=dict(batch_size=16, warmup_steps=0, lr=1e-2, **train))
        return train_classifier(recipe, command="test"), lstmgen.load(tmp_path / out)

    # the first epoch of gradual unfreezing trains the head alone: the LM's LSTM and embedding stay as they were
    _, clf = fine_tune("head", max_epochs=1)
    assert clf.tokenizer.vocab_size == lm.tokenizer.vocab_size and clf.model.config.hidden_size == 24
    assert torch.equal(clf.model.embedding.weight, lm.model.embedding.weight)
    assert torch.equal(clf.model.lstm.weight_hh_l0, lm.model.lstm.weight_hh_l0)
    # everything trained together starts from the LM and learns the task (with weight drop on its LSTM)
    result, clf = fine_tune("all", weight_drop=0.3, max_epochs=3, discriminative_lr=1.0, gradual_unfreezing=False)
    assert result["metrics"]["test"]["accuracy"] > 0.8 and clf.model.config.weight_drop == 0.3
    with pytest.raises(UserInputError, match="does not fit"):
        TextClassifierModel(ClassifierConfig(vocab_size=lm.tokenizer.vocab_size, embed_size=16, hidden_size=8,
                                             num_layers=2)).load_language_model(lm.model)


def test_texts_of_another_type_are_a_named_error(trained):
    clf = lstmgen.load(trained[1])
    for bad in (5, ["ok", None]):
        with pytest.raises(UserInputError, match="texts must be a string or a list of strings"):
            clf.predict(bad)


def test_language_model_commands_name_the_right_one(trained, tmp_path, capsys):
    """generate / inspect / export on a classifier folder: one line naming `lstmgen classify`, exit 2."""
    from lstmgen.cli import main

    folder = str(trained[1])
    for argv in (["generate", folder, "--prompt", "x"], ["inspect", folder, "--text", "x", "--out",
                                                           str(tmp_path / "r.html")],
                 ["export", "onnx", folder, str(tmp_path / "m.onnx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a text-classification model" in err and "`lstmgen classify`" in err and err.count("\n") == 1
