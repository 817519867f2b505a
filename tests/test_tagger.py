"""The BiLSTM-CRF tagger: the CRF against brute force, spans against seqeval, CoNLL reading, a small
tagging task learned, the pipeline, the CLI and /v1/tag."""
import itertools
import json
import random

import pytest
import torch

import lstmgen
from lstmgen.data.conll import read_conll, span_f1, spans, to_scheme
from lstmgen.errors import UserInputError
from lstmgen.nn.crf import LinearChainCRF, bio_constraints


def brute_force(crf, emissions, length):
    trans, start, end = crf._scores()
    T = emissions.shape[-1]
    scores = {}
    for path in itertools.product(range(T), repeat=length):
        s = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
        for t in range(1, length):
            s = s + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scores[path] = s
    return scores


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_against_enumeration(constrained):
    torch.manual_seed(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"] if constrained else ["a", "b", "c"]
    allowed = bio_constraints(tags) if constrained else (None, None, None)
    crf = LinearChainCRF(len(tags), *allowed)
    crf.requires_grad_(False)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    emissions = torch.randn(3, 4, len(tags))
    lengths = torch.tensor([4, 2, 1])
    mask = torch.arange(4)[None] < lengths[:, None]
    logz = crf.log_partition(emissions, mask)
    best = crf.viterbi(emissions, mask)
    for b, n in enumerate(lengths.tolist()):
        scores = brute_force(crf, emissions[b], n)
        assert torch.allclose(logz[b], torch.logsumexp(torch.stack(list(scores.values())), 0), atol=1e-4)
        assert tuple(best[b]) == max(scores, key=lambda p: float(scores[p]))
        gold = torch.tensor([list(best[b]) + [0] * (4 - n)])
        assert torch.allclose(crf.score(emissions[b:b + 1], gold, mask[b:b + 1])[0], scores[tuple(best[b])],
                              atol=1e-4)
    if constrained:  # no path the scheme forbids is ever chosen
        for path in best:
            names = [tags[t] for t in path]
            assert to_scheme(names, "bio") == names


def random_tags(rng, n, scheme):
    labels = ["PER", "LOC", "ORG"]
    prefixes = {"iob1": "IB", "bio": "BI", "bioes": "BIES"}[scheme]
    return [rng.choice(["O", f"{rng.choice(prefixes)}-{rng.choice(labels)}"]) for _ in range(n)]


@pytest.mark.parametrize("scheme", ["iob1", "bio", "bioes"])
def test_span_f1_matches_seqeval(scheme):
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(scheme)
    gold = [random_tags(rng, rng.randint(1, 12), scheme) for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-LOC", "E-ORG", "S-PER"])
             for t in g] for g in gold]
    if scheme != "bioes":
        pred = [[t if t[0] not in "ES" else "I" + t[1:] for t in p] for p in pred]
    ours = span_f1(gold, pred)
    assert ours["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-9)
    assert ours["precision"] == pytest.approx(precision_score(gold, pred), abs=1e-9)
    assert ours["recall"] == pytest.approx(recall_score(gold, pred), abs=1e-9)


def test_schemes_keep_the_spans():
    rng = random.Random(1)
    for _ in range(200):
        tags = random_tags(rng, 10, rng.choice(["iob1", "bio", "bioes"]))
        assert spans(to_scheme(tags, "bio")) == spans(tags) == spans(to_scheme(tags, "bioes"))
    assert to_scheme(["I-PER", "I-PER", "O", "I-LOC"], "bioes") == ["B-PER", "E-PER", "O", "S-LOC"]


def test_read_conll(tmp_path):
    p = tmp_path / "x.conll"
    p.write_text("-DOCSTART- -X- O O\n\nEU NNP I-ORG\nrejects VBZ O\n\nPeter NNP I-PER\n")
    s = read_conll(p)
    assert [x.words for x in s] == [["EU", "rejects"], ["Peter"]] and s[0].tags == ["I-ORG", "O"]
    p.write_text("EU NNP I-ORG\nrejects O\n")
    with pytest.raises(UserInputError, match=r"x.conll:2: 2 columns where the file has 3"):
        read_conll(p)
    p.write_text("text,label\ngood,pos\n")  # not CoNLL at all: said so, not "1 columns where the file has 1"
    with pytest.raises(UserInputError, match=r"x.conll:1: one column; .*is this a CoNLL file"):
        read_conll(p)


NAMES = "Alice Bruno Chen Dara Emil Farah Goran Hana Ivo Jana".split()
PLACES = "Paris Lima Oslo Cairo Quito Riga Sofia Tunis".split()
FILL = "the meeting went well and then it rained on".split()


def write_conll(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            toks = [(w, "O") for w in rng.sample(FILL, 3)]
            name = [(rng.choice(NAMES), "I-PER")] + ([(rng.choice(NAMES), "I-PER")] if rng.random() < 0.5 else [])
            toks[1:1] = name + [("visited", "O"), (rng.choice(PLACES), "I-LOC")]
            f.write("".join(f"{w} X {t}\n" for w, t in toks) + "\n")
    return path


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    from lstmgen.tagging import TagRecipe, train_tagger
    from lstmgen.training import TrainConfig

    d = tmp_path_factory.mktemp("tagger")
    data = write_conll(d / "toy.conll", 400, 0)
    recipe = TagRecipe(data=str(data), out=str(d / "model"), word_dim=24, char_dim=8, char_hidden=8,
                       hidden_size=24, dropout=0.2,
                       train=TrainConfig(batch_size=16, max_epochs=4, lr=1e-2, warmup_steps=10, clip=5.0))
    result = train_tagger(recipe, command="test")
    return result, d / "model"


def test_learns_a_small_tagging_task(tagger_dir):
    result, folder = tagger_dir
    assert result["metrics"]["test"]["f1"] > 0.9
    assert (folder / "test_predictions.conll").read_text().count("\n") > 100


def test_train_from_a_config_file_and_resume(tmp_path, capsys):
    """`train tag` reads --config (tables or flat keys, flags win), refuses a folder that holds a run, and
    continues one with --resume (each step once in the log)."""
    from lstmgen.cli import main

    data = write_conll(tmp_path / "toy.conll", 60, 1)
    cfg = tmp_path / "tag.toml"
    cfg.write_text(f'data = "{data}"\nscheme = "bio"\n[model]\nword-dim = 8\nchar_dim = 4\nchar_hidden = 4\n'
                   'hidden_size = 8\n[train]\nmax_steps = 2\nbatch_size = 8\n')
    out = str(tmp_path / "t")
    assert main(["train", "tag", "--config", str(cfg), "--out", out]) == 0
    assert "test: entity F1" in capsys.readouterr().out
    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["model"]["word_dim"] == 8 and saved["training"]["scheme"] == "bio"
    assert main(["train", "tag", "--config", str(cfg), "--out", out, "--max-steps", "4"]) == 2
    assert main(["train", "tag", "--config", str(cfg), "--out", out, "--max-steps", "4", "--resume"]) == 0
    log = (tmp_path / "t" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [2, 4]
    assert main(["train", "tag", "--out", out]) == 2 and "--data is required" in capsys.readouterr().err


def test_pipeline_cli_and_server(tagger_dir, capsys):
    from fastapi.testclient import TestClient

    from lstmgen.cli import main
    from lstmgen.server import create_app

    result, folder = tagger_dir
    tagger = lstmgen.load(folder)
    text = "the Hana visited Oslo, then it rained"
    (r,) = tagger.tag(text)
    assert [(e["text"], e["label"]) for e in r["entities"]] == [("Hana", "PER"), ("Oslo", "LOC")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in r["entities"])
    assert tagger.tag("")[0]["entities"] == []
    assert main(["tag", str(folder), text, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entities"][1]["text"] == "Oslo"
    assert main(["tag", str(folder)]) == 2
    # `lstmgen eval` scores a tagger folder on a split: the figures training reported for it
    assert main(["eval", str(folder), "--data", str(folder.parent / "toy.conll"), "--split", "test", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["f1"] == result["metrics"]["test"]["f1"] and r["sentences"] == result["metrics"]["test"]["sentences"]
    with TestClient(create_app({"ner": tagger})) as client:
        r = client.post("/v1/tag", json={"model": "ner", "input": text})
        assert r.status_code == 200 and r.json()["data"][0]["entities"][0]["label"] == "PER"


def test_texts_of_another_type_are_a_named_error(tagger_dir):
    tagger = lstmgen.load(tagger_dir[1])
    for bad in (5, ["ok", None]):
        with pytest.raises(UserInputError, match="texts must be a string or a list of strings"):
            tagger.tag(bad)
