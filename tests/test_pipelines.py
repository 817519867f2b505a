"""Model folders and generation: save/load, no pickle, clear errors, determinism, incremental decoding."""
import json
import shutil

import numpy as np
import pytest
import torch

import lstmgen
from lstmgen.errors import ModelFolderError, UserInputError
from lstmgen.models import LanguageModel, LMConfig
from lstmgen.pipelines import TextGenerator


def test_folder_has_every_file(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
            "training_log.jsonl", "loss.png"} <= names
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "lstm-lm" and cfg["lstmgen_version"] == lstmgen.__version__
    assert {"loss", "perplexity", "bpc", "window256_loss"} <= set(cfg["metrics"]["valid"])
    card = (tiny_model_dir / "README.md").read_text()
    assert "pytest fixture" in card and "window256_loss" in card and "parameters" in card


def test_round_trip_gives_identical_logits(tiny_model_dir, tmp_path):
    gen = lstmgen.load(tiny_model_dir)
    gen.save_pretrained(tmp_path / "copy")
    again = TextGenerator.from_pretrained(tmp_path / "copy")
    x = torch.tensor([gen.tokenizer.encode("KING:\nThe")])
    assert torch.equal(gen.model(x)[0], again.model(x)[0])
    half = gen.save_pretrained(tmp_path / "half", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "copy" / "model.safetensors").stat().st_size
    loaded = TextGenerator.from_pretrained(half)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert torch.allclose(gen.model(x)[0], loaded.model(x)[0], atol=2e-2)


def test_bfloat16_generation(tiny_model_dir):
    """dtype="bfloat16" loads bf16 weights; one row and a batch decode as they do step by step, with logits
    close to float32's."""
    fp32, bf16 = lstmgen.load(tiny_model_dir), lstmgen.load(tiny_model_dir, dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(lstmgen.load(tiny_model_dir, dtype=torch.bfloat16).model.parameters()).dtype == torch.bfloat16
    for bad in ("float16", "int8"):
        with pytest.raises(UserInputError, match="dtype must be float32 or bfloat16"):
            lstmgen.load(tiny_model_dir, dtype=bad)
    if not torch.cuda.is_available():  # a device that is not there: a named error, not torch's AssertionError
        with pytest.raises(UserInputError, match="CUDA is not available"):
            lstmgen.load(tiny_model_dir, device="cuda")
    x = torch.tensor([fp32.tokenizer.encode("KING:\nThe king")])
    with torch.no_grad():
        a, b = fp32.model(x)[0].float().log_softmax(-1), bf16.model(x)[0].float().log_softmax(-1)
    assert (a - b).abs().mean() < 0.05 and (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.8
    one = bf16.generate("KING:", max_new_tokens=40, temperature=0)
    ids = bf16.tokenizer.encode("KING:") + one.token_ids
    with torch.no_grad():  # greedy: each token is the argmax of the bf16 model's logits over the text before it
        logits = bf16.model(torch.tensor([ids]))[0][0].float()
    # the sequence call and the steps may round near-ties differently; nearly every step agrees
    agree = (logits[len(ids) - 41:-1].argmax(-1) == torch.tensor(one.token_ids)).float().mean()
    assert agree > 0.9
    many = bf16.generate(["KING:", "QUEEN:"], max_new_tokens=20, temperature=0.8, seed=3)
    assert all(len(r.token_ids) == 20 or r.finish_reason != "length" for r in many)
    with pytest.raises(UserInputError, match="dtype"):
        lstmgen.load(tiny_model_dir, dtype="float16")


def test_same_seed_same_text_and_seeds_differ(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    a = gen.generate("KING:", max_new_tokens=80, temperature=1.0, seed=7)
    b = lstmgen.load(tiny_model_dir).generate("KING:", max_new_tokens=80, temperature=1.0, seed=7)
    c = gen.generate("KING:", max_new_tokens=80, temperature=1.0, seed=8)
    assert a == b and a != c and a.startswith("KING:") and len(a) == len("KING:") + 80


def test_stream_pieces_join_to_generate(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    pieces = list(gen.stream("The", max_new_tokens=40, seed=3))
    # a piece per block of steps read (a block's tokens are decoded at once), so several, not one at the end
    assert 1 < len(pieces) <= 40 and "The" + "".join(pieces) == gen.generate("The", max_new_tokens=40, seed=3)
    stepwise = list(gen.stream("The", max_new_tokens=40, seed=3, stop=["zzz"]))  # stop strings: token by token
    assert len(stepwise) == 40 and "".join(stepwise) == "".join(pieces)


def test_greedy_equals_argmax_and_top_k_1(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    ids = gen.tokenizer.encode("QUEEN:")
    with torch.no_grad():
        for _ in range(30):
            logits, _ = gen.model(torch.tensor([ids]))  # the slow way: the whole text every step
            ids.append(int(logits[0, -1].argmax()))
    greedy = gen.generate("QUEEN:", max_new_tokens=30, temperature=0)
    assert greedy == gen.tokenizer.decode(ids)
    assert gen.generate("QUEEN:", max_new_tokens=30, temperature=0.7, top_k=1, seed=5) == greedy
    assert gen.generate("QUEEN:", max_new_tokens=30, top_p=1e-6, seed=9) == greedy


def test_prompt_runs_once_then_one_step_per_token(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    lengths, steps = [], []
    hook = gen.model.lstm.register_forward_hook(lambda m, inp, out: lengths.append(inp[0].shape[1]))
    one_step = gen.model.lstm.step
    gen.model.lstm.step = lambda x, state, out=None: (steps.append(tuple(x.shape)), one_step(x, state, out))[1]
    try:
        gen.generate("The king and", max_new_tokens=10, seed=0)
    finally:
        hook.remove()
        del gen.model.lstm.step
    # the prompt in one call, then one single-token step per new token but the last (never fed)
    assert lengths == [len("The king and")] and len(steps) == 9 and steps[0][0] == 1


def test_empty_prompt_and_bad_options(tiny_model_dir):
    gen = lstmgen.load(tiny_model_dir)
    assert len(gen.generate("", max_new_tokens=20, seed=1)) == 20
    with pytest.raises(UserInputError, match="temperature must be >= 0"):
        gen.generate("x", temperature=-1)
    with pytest.raises(UserInputError, match="top_p must be > 0"):
        gen.generate("x", top_p=0)
    with pytest.raises(UserInputError, match="unknown generation option"):
        gen.generate("x", top_q=0.5)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "missing config.json"),
    (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer.json"),
    (lambda d: (d / "config.json").write_text("{oops"), "malformed JSON"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 40), "not a readable safetensors file"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "model": {"vocab_size": 999}})), "different models"),
    (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "gpt2"})), "not an lstmgen model"),
])
def test_damaged_folders_give_one_clear_error(tiny_model_dir, tmp_path, damage, message):
    d = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, d)
    damage(d)
    with pytest.raises(ModelFolderError, match=message):
        lstmgen.load(d)


def test_unknown_model_name():
    with pytest.raises(ModelFolderError, match="no model folder 'nonexistent-model'"):
        lstmgen.load("nonexistent-model")


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_word_and_bpe_models_train_save_and_stream(tmp_path, kind):
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    text = "".join(f"the king 王 speaks 🎉 to lord {i % 7} and the queen café\n" for i in range(300))
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    recipe = LMRecipe(data=str(tmp_path / "c.txt"), out=str(tmp_path / kind), tokenizer=kind, vocab_size=300,
                      hidden_size=32, num_layers=1,
                      train=TrainConfig(batch_size=4, bptt=16, max_steps=30, eval_every=15, warmup_steps=2,
                                        lr=1e-2))
    train_lm(recipe, command="pytest")
    gen = lstmgen.load(tmp_path / kind)
    assert gen.tokenizer.kind == kind
    pieces = list(gen.stream("the king", max_new_tokens=25, temperature=1.0, seed=4))
    assert "the king" + "".join(pieces) == gen.generate("the king", max_new_tokens=25, temperature=1.0, seed=4)
    assert not any(p.endswith("\ufffd") for p in pieces[:-1])  # no piece ends inside a UTF-8 character
    if kind == "word":
        assert pieces[0].startswith((" ", "\n"))


class ScriptedModel(torch.nn.Module):
    """Stands in for a LanguageModel: always predicts the next id of a fixed script (its last id once the
    script is used up: a block of steps may run one step past the text it keeps)."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab, self.calls = list(script), vocab, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = LMConfig(vocab_size=vocab, hidden_size=1, num_layers=1)

    def forward(self, ids, state=None):
        logits = torch.full((1, ids.shape[1], self.vocab), -1e9)
        logits[0, -1, self.script[min(self.calls, len(self.script) - 1)]] = 0.0
        self.calls += 1
        zeros = torch.zeros(1, ids.shape[0], 1)
        return logits, (zeros, zeros)

    def step(self, ids, state, out=None):
        logits, state = self.forward(ids.view(-1, 1), state)
        if out is not None:
            out[0].copy_(state[0])
            out[1].copy_(state[1])
            state = out
        return logits[:, -1], state


def test_bpe_stream_never_splits_a_character():
    from lstmgen.tokenizers import Tokenizer

    tok = Tokenizer.train("bpe", ["plain ascii text only"], vocab_size=260)
    script = tok.encode("a世界🎉b")  # byte-level: the CJK characters and the emoji are several tokens each
    assert len(script) > 5
    # token by token (a stop string makes the decoder step): a piece as each character is whole
    gen = TextGenerator(ScriptedModel(script, tok.vocab_size), tok)
    pieces = list(gen.stream("x", max_new_tokens=len(script), temperature=0, stop=["zzz"]))
    assert pieces == ["a", "世", "界", "🎉", "b"]
    # in blocks of 8 steps (the first after the prefill's token): the second block ends inside the emoji,
    # whose first bytes wait for the third
    gen = TextGenerator(ScriptedModel(script, tok.vocab_size), tok)
    pieces = list(gen.stream("x", max_new_tokens=len(script), temperature=0))
    assert pieces == ["a", "世界", "🎉", "b"]


def test_generate_from_two_threads_at_once_gives_each_its_own_text(tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    gen = lstmgen.load(tiny_model_dir)
    opts = [dict(max_new_tokens=40, temperature=0.9, seed=s) for s in range(6)]
    alone = [gen.generate("KING:", **o) for o in opts]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda o: gen.generate("KING:", **o), opts))
    assert together == alone
    assert gen._blocks_lock.acquire(blocking=False)  # every call gave the shared blocks back
    gen._blocks_lock.release()


def test_prompts_as_token_ids_are_used_as_given():
    """The OpenAI API's prompt forms: a list of token ids is one prompt, a list of such lists several. The ids
    reach the model as they are, even where byte-level BPE would spell the same text otherwise."""
    from lstmgen.tokenizers import Tokenizer

    tok = Tokenizer.train("bpe", ["hello hello hello world"] * 20, vocab_size=270)
    torch.manual_seed(0)
    gen = TextGenerator(LanguageModel(LMConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1)).eval(), tok)
    canonical = tok.encode("hello")
    spelled = [tok.encode(c)[0] for c in "hello"]  # the same text, one byte a token
    assert len(canonical) < len(spelled) and tok.decode(spelled) == "hello"
    assert gen.score(spelled)[0] == spelled and gen.score(canonical) == gen.score("hello")
    with torch.no_grad():
        first = int(gen.model(torch.tensor([spelled]))[0][0, -1].argmax())
    r = gen.generate(spelled, max_new_tokens=4, temperature=0)
    assert r.startswith("hello") and r.token_ids[0] == first
    assert [x.token_ids for x in gen.generate([spelled, canonical], max_new_tokens=4, temperature=0)] == \
        [r.token_ids, gen.generate("hello", max_new_tokens=4, temperature=0).token_ids]
    assert "".join(gen.stream(np.array(spelled), max_new_tokens=4, temperature=0)) == r.completion
    assert gen.generate(spelled, max_new_tokens=4, num_beams=2).token_ids == \
        gen.generate(torch.tensor(spelled), max_new_tokens=4, num_beams=2).token_ids


def test_text_assembler_blocks_of_any_size_give_whole_characters():
    import random

    from lstmgen.generation import TextAssembler
    from lstmgen.tokenizers import Tokenizer

    tok = Tokenizer.train("bpe", ["plain ascii text only"], vocab_size=260)
    text = "a世界🎉b é ü 😀x"
    ids = tok.encode(text)
    rng = random.Random(0)
    for _ in range(50):
        asm, pieces, i = TextAssembler(tok, None), [], 0
        while i < len(ids):
            n = rng.randint(1, 6)
            pieces.append(asm.push_many(ids[i:i + n], final=i + n >= len(ids)))
            i += n
        assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
