"""The encoder-decoder: attention and masks, copying and coverage, batched search, a synthetic task
learned in seconds, parallel data with its errors, the scores, the pipeline, the CLI and /v1/translate."""
import json
import os
import random
import warnings

import pytest
import torch

import lstmgen
from lstmgen.data.parallel import open_parallel
from lstmgen.errors import DataNotFoundError, UserInputError
from lstmgen.generation import GenerationConfig
from lstmgen.generation.search import search
from lstmgen.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lstmgen.seq2seq_recipe import Seq2SeqRecipe, train_seq2seq
from lstmgen.training.textmetrics import bleu_chrf, normalize_answer, rouge, squad_scores


def tiny(**kw) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = dict(src_vocab_size=20, tgt_vocab_size=20, embed_size=8, hidden_size=16, encoder_layers=2,
               decoder_layers=2, dropout=0.0)
    return Seq2Seq(Seq2SeqConfig(**{**cfg, **kw})).eval().requires_grad_(False)


def batch(lengths, V=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (len(lengths), max(lengths)), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = 0
    return src, torch.tensor(lengths)


def test_the_seed_alone_decides_the_initial_weights():
    """Models built from one seed are equal whatever their modules' addresses (a set of the two embeddings
    once decided which drew first, so the trained model changed from process to process)."""
    models = [tiny(tie_output=False) for _ in range(12)]  # all kept alive: each gets new addresses
    for m in models[1:]:
        for (name, a), b in zip(models[0].state_dict().items(), m.state_dict().values()):
            assert torch.equal(a, b), name


VARIANTS = [dict(), dict(attention="dot"), dict(attention="bahdanau"), dict(attention="none"),
            dict(input_feed=False, tie_output=False),
            dict(attention="bahdanau", copy=True, coverage=True, share_embeddings=True)]


@pytest.mark.parametrize("kw", VARIANTS)
def test_padding_never_changes_a_result(kw):
    """A source decoded alone equals the same source in a batch with longer ones: the encoder is packed
    and attention never looks at padding."""
    m = tiny(**kw)
    src, lengths = batch([6, 3, 5])
    tgt = torch.randint(3, 20, (3, 4))
    logp, attn, _ = m(src, lengths, tgt)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 4), atol=1e-5)
    if attn is not None:
        assert float(attn[1, :, 3:].abs().max()) == 0.0
    alone, _, _ = m(src[1:2, :3], lengths[1:2], tgt[1:2])
    assert torch.allclose(alone, logp[1:2], atol=1e-5)


def test_copy_puts_attention_mass_on_source_tokens():
    m = tiny(attention="bahdanau", copy=True, share_embeddings=True)
    with torch.no_grad():
        m.p_gen.bias.fill_(-1e4)  # p_gen = 0: pure copying
    src, lengths = batch([5, 4])
    logp, attn, _ = m(src, lengths, torch.randint(3, 20, (2, 3)))
    p = logp.exp()
    for b in range(2):
        mass = p[b, :, src[b, :lengths[b]].unique()].sum(-1)
        assert torch.allclose(mass, torch.ones(3), atol=1e-4)


def test_coverage_loss():
    m = tiny(attention="bahdanau", coverage=True)
    src, lengths = batch([5, 2])
    _, attn, cov = m(src, lengths, torch.randint(3, 20, (2, 4)))
    assert float(cov[:, 0].abs().max()) == 0.0  # nothing is covered before the first step
    expected = torch.minimum(attn[:, 1], attn[:, 0]).sum(-1)
    assert torch.allclose(cov[:, 1], expected, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(attention="dot", coverage=True), dict(copy=True),
                                 dict(hidden_size=15), dict(share_embeddings=True, src_vocab_size=30)])
def test_bad_model_settings(bad):
    with pytest.raises(UserInputError):
        tiny(**bad)


def _search(m, src, lengths, **options):
    cfg = GenerationConfig(temperature=0.0, max_new_tokens=8, eos_token_id=2).updated(**options)

    def step(tokens, st):
        logp, st, _ = m.decode_step(tokens, st)
        return logp, st

    return search(step, m.reorder_state, m.encode(src, lengths), len(lengths), cfg, bos_id=1)


def test_search_greedy_beam_and_batching():
    m = tiny()
    src, lengths = batch([6, 3, 5, 2])
    greedy = _search(m, src, lengths)
    assert [o[0].token_ids for o in _search(m, src, lengths, num_beams=1)] == [o[0].token_ids for o in greedy]
    beams = _search(m, src, lengths, num_beams=4, num_return_sequences=3, length_penalty=0.0, logprobs=True)
    for b in range(4):
        alone = _search(m, src[b:b + 1, :lengths[b]], lengths[b:b + 1], num_beams=4, num_return_sequences=3,
                        length_penalty=0.0, logprobs=True)[0]
        assert [o.token_ids for o in alone] == [o.token_ids for o in beams[b]]
        scores = [o.score for o in beams[b]]
        assert scores == sorted(scores, reverse=True)
        assert all(abs(sum(o.logprobs) - o.score) < 1e-4 for o in beams[b])  # length_penalty 0: the sum
        # a greedy sequence is one hypothesis the beam could keep: the beam's best is at least as likely
        g = greedy[b][0]
        g_logp = _search(m, src[b:b + 1, :lengths[b]], lengths[b:b + 1], logprobs=True)[0][0].logprobs
        assert beams[b][0].score >= sum(g_logp) - 1e-4 or g.finish_reason == "length"
    sampled = _search(m, src, lengths, temperature=1.0, seed=3, num_return_sequences=2)
    assert [o.token_ids for s in sampled for o in s] == \
        [o.token_ids for s in _search(m, src, lengths, temperature=1.0, seed=3, num_return_sequences=2) for o in s]
    blocked = _search(m, src, lengths, num_beams=3, no_repeat_ngram_size=1, max_new_tokens=8)
    for outs in blocked:
        ids = [t for t in outs[0].token_ids if t != 2]
        assert len(ids) == len(set(ids))


# -- a synthetic task: reversing digit strings ------------------------------------------------------------
@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    d = tmp_path_factory.mktemp("reverse")
    rng = random.Random(0)
    with open(d / "rev.tsv", "w") as f:
        for _ in range(3000):
            s = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 10)))
            f.write(f"{s}\t{s[::-1]}\n")
    recipe = Seq2SeqRecipe.from_preset(
        None, data=str(d / "rev.tsv"), out=str(d / "model"), tokenizer="char", embed_size=32, hidden_size=64,
        encoder_layers=1, decoder_layers=1, dropout=0.0, label_smoothing=0.0, num_beams=1, eval_examples=100,
        max_new_tokens=20, train=dict(batch_size=32, max_epochs=8, lr=1e-2, warmup_steps=20,
                                      eval_every=500, weight_decay=0.0))
    return train_seq2seq(recipe, command="test"), d


def test_learns_to_reverse_within_a_minute(reverser):
    result, d = reverser
    # 8 epochs (600 steps) train in 0.23-0.28 minutes on this project's 2 cores; no time budget in the
    # recipe, since a budget also sets the learning-rate schedule and would make the model depend on the clock
    assert result["minutes"] <= 1.0
    pipe = lstmgen.load(d / "model")
    pairs = open_parallel(str(d / "rev.tsv")).splits["test"]
    for beams in (1, 4):
        hyps = pipe([s for s, _ in pairs], num_beams=beams)
        exact = sum(h == t for h, (_, t) in zip(hyps, pairs)) / len(pairs)
        assert exact >= 0.95, (beams, exact)


def test_pipeline_folder_and_attention(reverser, tmp_path):
    _, d = reverser
    pipe = lstmgen.load(d / "model")
    assert pipe(["12345"]) == ["54321"]
    (r,) = pipe.translate("9876", num_beams=3, num_return_sequences=2)
    assert r["translation"] == "6789" and len(r["candidates"]) == 2 and r["finish_reason"] == "eos"
    weights, src, tgt = pipe.attention("12345")
    assert weights.shape == (6, 5) and src == list("12345") and tgt[-1] == "</s>"
    assert torch.argmax(weights[0]) == 4  # the first output digit looks at the last input digit
    pipe.save_pretrained(tmp_path / "copy")
    # inputs of the lengths trained on (3-10 digits)
    assert lstmgen.load(tmp_path / "copy")(["4242", "170"]) == pipe(["4242", "170"]) == ["2424", "071"]
    card = (d / "model" / "README.md").read_text()
    assert "encoder-decoder" in card and "pipeline_tag: translation" in card
    with pytest.warns(UserWarning, match="1 of 2 source texts"):
        type(pipe).translate(pipe, ["1" * 500, "12"])  # past max_source_tokens: cut, with a count


def test_cli_translate_eval_and_train(reverser, tmp_path, capsys):
    from lstmgen.cli import main

    _, d = reverser
    model = str(d / "model")
    inp = tmp_path / "in.txt"
    inp.write_text("123\n\n4567\n")
    assert main(["translate", model, "--input", str(inp), "--num-beams", "2",
                 "--attention-plot", str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().out == "321\n\n7654\n"  # one output line per input line, blanks kept
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert main(["translate", model, "128", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["translation"] == "821"
    assert main(["translate", model, "--num-beams", "2", "128", "345"]) == 0  # texts after the options too
    assert capsys.readouterr().out == "821\n543\n"
    assert main(["eval", model, "--data", str(d / "rev.tsv"), "--split", "test"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["chrf"] > 95 and r["examples"] == 300 and "nrefs:1" in r["bleu_signature"]
    assert main(["eval", model, "--data", str(d / "rev.tsv"), "--cache-tune"]) == 2  # language models only
    assert "seq2seq folder" in capsys.readouterr().err
    assert main(["translate", "shakespeare-char", "x"]) == 2
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("".join(json.dumps({"q": f"a{i} b", "a": f"b a{i}"}) + "\n" for i in range(40)))
    assert main(["train", "seq2seq", "--data", f"{pairs}:q:a", "--out", str(tmp_path / "m"), "--tokenizer", "word",
                 "--embed-size", "8", "--hidden-size", "8", "--encoder-layers", "1", "--decoder-layers", "1",
                 "--max-steps", "3", "--eval-examples", "4", "--num-beams", "2"]) == 0
    assert "valid: bleu" in capsys.readouterr().out
    assert (tmp_path / "m" / "target_tokenizer.json").is_file()
    # the same settings from a --config file (the flags win), continued with --resume to 5 steps
    cfg = tmp_path / "s2s.toml"
    cfg.write_text(f'[data]\ndata = "{pairs}:q:a"\ntokenizer = "word"\n[model]\nembed_size = 8\nhidden-size = 8\n'
                   'encoder_layers = 1\ndecoder_layers = 1\n[train]\nmax_steps = 99\neval_examples = 4\n'
                   'num_beams = 2\n')
    assert main(["train", "seq2seq", "--config", str(cfg), "--out", str(tmp_path / "m"), "--max-steps", "5"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "seq2seq", "--config", str(cfg), "--out", str(tmp_path / "m"), "--max-steps", "5",
                 "--resume"]) == 0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["training"]["config"]["max_steps"] == 5 and saved["model"]["hidden_size"] == 8
    log = (tmp_path / "m" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [3, 5]


def test_translate_endpoint(reverser):
    from fastapi.testclient import TestClient

    from lstmgen.server import create_app

    _, d = reverser
    app = create_app({"rev": lstmgen.load(d / "model")}, engine_thread=True)
    with TestClient(app) as client:
        r = client.post("/v1/translate", json={"model": "rev", "input": ["123", "987"], "options": {"num_beams": 2}})
        assert r.status_code == 200, r.text
        assert [x["translation"] for x in r.json()["data"]] == ["321", "789"]
        r = client.post("/v1/translate", json={"model": "rev", "input": "1", "options": {"num_beams": 0}})
        assert r.status_code == 400 and "num_beams" in r.json()["error"]["message"]
    app.engine.stop()


# -- data --------------------------------------------------------------------------------------------
def test_parallel_files_and_their_errors(tmp_path):
    for split, n in (("train", 12), ("valid", 3), ("test", 2)):
        (tmp_path / f"{split}.de").write_text("".join(f"hallo {i}\n" for i in range(n)))
        (tmp_path / f"{split}.en").write_text("".join(f"hello {i}\n" for i in range(n)))
    c = open_parallel(str(tmp_path / "train"), "de", "en")
    assert {k: len(v) for k, v in c.splits.items()} == {"train": 12, "valid": 3, "test": 2}
    assert c.splits["valid"][2] == ("hallo 2", "hello 2")
    (tmp_path / "valid.en").write_text("one\ntwo\n")
    with pytest.raises(UserInputError, match=r"valid\.de has 3 lines but .*valid\.en has 2"):
        open_parallel(str(tmp_path / "train"), "de", "en")
    (tmp_path / "train.en").write_text("".join(f"hello {i}\n" if i != 4 else "  \n" for i in range(12)))
    with pytest.raises(UserInputError, match=r"train\.en:5: empty"):
        open_parallel(str(tmp_path / "train"), "de", "en")
    with pytest.raises(DataNotFoundError, match="no file"):
        open_parallel(str(tmp_path / "nothing"), "de", "en")
    tsv = tmp_path / "fra.txt"
    tsv.write_text("".join(f"Go {i}.\tVa {i} !\tCC-BY attribution\n" for i in range(20)))
    c = open_parallel(str(tsv))
    assert len(c.splits["train"]) == 16 and c.splits["valid"][0] == ("Go 8.", "Va 8 !")
    tsv.write_text("just one column\n")
    with pytest.raises(UserInputError, match=r"fra\.txt:1: expected source<TAB>target"):
        open_parallel(str(tsv))
    js = tmp_path / "p.jsonl"
    js.write_text('{"source": "a", "target": "b"}\n{"source": "c"}\n')
    with pytest.raises(UserInputError, match=r"p\.jsonl:2: needs the fields"):
        open_parallel(str(js))
    with pytest.raises(UserInputError, match="SRC-TGT|languages"):
        open_parallel("multi30k:de-fr")


@pytest.mark.skipif(not os.environ.get("LSTMGEN_DATA"), reason="LSTMGEN_DATA not set (../shared/data)")
def test_registry_pairs():
    c = open_parallel("multi30k:de-en")
    assert [len(c.splits[s]) for s in ("train", "valid", "test")] == [29000, 1014, 1000]
    assert c.splits["test"][0][1].startswith("A man in an orange hat")
    assert open_parallel("multi30k", "en", "de").splits["train"][0][1].startswith("Zwei junge")
    g = open_parallel("gigaword")
    assert [len(g.splits[s]) for s in ("train", "valid", "test")] == [1561, 195, 195]
    s = open_parallel("squad")
    assert s.task == "question-answering" and s.splits["train"][0][0].startswith("question: ")
    assert sum(len(v) for v in s.splits.values()) == 10570
    f = open_parallel("fra-eng:fr-en")
    assert sum(len(v) for v in f.splits.values()) == 142787 and f.splits["train"][0] == ("Va !", "Go.")


# -- scores ------------------------------------------------------------------------------------------
def test_scores():
    refs = ["a man rides a bike down the road .", "two dogs play in the snow ."]
    same = bleu_chrf(refs, refs)
    assert same["bleu"] == 100.0 and same["chrf"] == 100.0 and "tok:13a" in same["bleu_signature"]
    assert bleu_chrf(["the cat", "x"], refs)["bleu"] < 5
    assert rouge(refs, refs) == {"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0}
    assert rouge(["a man rides"], ["a man rode a horse"])["rouge2"] == pytest.approx(100 * 2 * 0.5 * 0.25 / 0.75,
                                                                                     abs=0.01)
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert squad_scores(["Denver Broncos", "the Panthers team"], ["denver broncos", "Carolina Panthers"]) == \
        {"exact_match": 50.0, "f1": 75.0}


def test_tied_weights_are_stored_once(tmp_path):
    from safetensors.torch import load_file

    from lstmgen.folder import load_weights, state_dict_for_saving

    m = tiny(attention="bahdanau", copy=True, share_embeddings=True)
    sd = state_dict_for_saving(m)
    assert "src_embedding.weight" in sd and "tgt_embedding.weight" not in sd and "out.weight" not in sd
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "w.safetensors"))
    m2 = tiny(attention="bahdanau", copy=True, share_embeddings=True, dropout=0.1)
    for p in m2.parameters():
        p.zero_()
    load_weights(m2, tmp_path / "w.safetensors")
    assert m2.out.weight is m2.src_embedding.weight
    assert torch.equal(m2.out.weight, load_file(str(tmp_path / "w.safetensors"))["src_embedding.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src, lengths = batch([3])
        assert torch.allclose(m(src, lengths, src)[0], m2.eval()(src, lengths, src)[0])


def test_kept_weights_by_loss_or_by_score():
    from lstmgen.training import TrainConfig
    from lstmgen.training.tasks import Seq2SeqTask

    by_loss = Seq2SeqTask([], [], TrainConfig(), 1, 2)
    by_bleu = Seq2SeqTask([], [], TrainConfig(), 1, 2, select="valid_bleu")
    best = {"valid_loss": 2.0, "valid_bleu": 30.0}
    later = {"valid_loss": 2.1, "valid_bleu": 31.0}  # the loss rose while the score still improved
    assert not by_loss.better(later, best) and by_bleu.better(later, best)
    assert by_bleu.better({"valid_loss": 1.9, "valid_bleu": 30.0}, best)  # a tie goes to the lower loss
    with pytest.raises(UserInputError, match="select-by"):
        Seq2SeqRecipe(data="x", out="y", select_by="bleu")


def test_texts_of_another_type_are_a_named_error(reverser):
    pipe = lstmgen.load(reverser[1] / "model")
    for bad in (5, ["12", None]):
        with pytest.raises(UserInputError, match="texts must be a string or a list of strings"):
            pipe.translate(bad)
