"""Chat templates: the default transcript, a folder's own Jinja template (transformers' file name and
variables), and `lstmgen train lm --chat-template`."""
import pytest

import lstmgen
from lstmgen.chat import DEFAULT_STOP, TEMPLATE_FILE, check_template, render
from lstmgen.errors import UserInputError

PLAY = ("{% for m in messages %}{{ m['role'] | upper }}:\n{{ m['content'] }}\n\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:\n{% endif %}")


def test_the_default_transcript():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]
    assert render(msgs) == "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert render(msgs, add_generation_prompt=False).endswith("User: Bye\n")


def test_a_template_renders_as_transformers_does():
    """The same template and messages through transformers' own apply_chat_template give the same text."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, unk_token="x")))
    msgs = [{"role": "user", "content": "Who comes?"}, {"role": "assistant", "content": "A friend."},
            {"role": "user", "content": "Whence?"}]
    for template in (PLAY, None):
        want = tok.apply_chat_template(msgs, chat_template=template or lstmgen.chat.DEFAULT_TEMPLATE, tokenize=False,
                                       add_generation_prompt=True)
        assert render(msgs, template) == want


def test_a_folder_keeps_its_template(tiny_model_dir, tmp_path):
    gen = lstmgen.load(tiny_model_dir)
    assert gen.chat_template is None and gen.chat_prompt([{"role": "user", "content": "x"}])[1] == DEFAULT_STOP
    gen.chat_template = PLAY
    gen.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / TEMPLATE_FILE).read_text() == PLAY
    again = lstmgen.load(tmp_path / "m")
    prompt, stops = again.chat_prompt([{"role": "user", "content": "Who comes?"}])
    assert prompt == "USER:\nWho comes?\n\nASSISTANT:\n" and stops == []


@pytest.mark.parametrize("bad", ["{% for %}", "{{ raise_exception('no system role') }}"])
def test_bad_templates_are_one_line_errors(bad):
    with pytest.raises(UserInputError, match="chat template"):
        check_template(bad)


def test_a_template_runs_in_a_sandbox():
    """As in transformers: a template cannot reach Python's objects through underscore attributes."""
    assert render([{"role": "user", "content": "x"}], "{{ ''.__class__ }}ok") == "ok"


def test_train_lm_puts_the_template_in_the_folder(corpus_file, tmp_path):
    from lstmgen.recipes import LMRecipe, train_lm
    from lstmgen.training import TrainConfig

    (tmp_path / "t.jinja").write_text(PLAY)
    train = TrainConfig(max_steps=2, eval_every=2, batch_size=4, bptt=16, device="cpu")
    train_lm(LMRecipe(data=str(corpus_file), out=str(tmp_path / "m"), hidden_size=16, num_layers=1, sample_tokens=0,
                      chat_template=str(tmp_path / "t.jinja"), train=train))
    assert lstmgen.load(tmp_path / "m").chat_template == PLAY
    (tmp_path / "bad.jinja").write_text("{% if %}")
    with pytest.raises(UserInputError, match="chat template"):
        train_lm(LMRecipe(data=str(corpus_file), out=str(tmp_path / "n"), hidden_size=16, num_layers=1,
                          chat_template=str(tmp_path / "bad.jinja"), train=train))
