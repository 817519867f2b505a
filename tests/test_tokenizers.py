"""Tokenizers: exact round trips, the word normalisation, and the tokenizer.json format."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from lstmgen.errors import ModelFolderError, UserInputError
from lstmgen.tokenizers import Tokenizer

# Any Unicode text except lone surrogates (not encodable as UTF-8, so not text a file can hold).
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
TRICKY = "héllo wörld 世界 🎉👍🏽 e\u0301 tab\there\r\nline\u2028sep\x00nul"


@settings(max_examples=60, deadline=None)
@given(text=any_text)
def test_char_round_trip(text):
    tok = Tokenizer.train("char", [text])
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(train=any_text, text=any_text.map(lambda t: t.replace("|", "\n")))
def test_bpe_round_trips_any_text_even_unseen(train, text):
    tok = Tokenizer.train("bpe", [train + TRICKY], vocab_size=300)
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids  # parallel path = whole


def test_tricky_text_all_kinds(tmp_path):
    for kind in ("char", "bpe"):
        tok = Tokenizer.train(kind, [TRICKY], vocab_size=300)
        assert tok.decode(tok.encode(TRICKY)) == TRICKY
        tok.save(tmp_path / f"{kind}.json")
        again = Tokenizer.load(tmp_path / f"{kind}.json")
        assert again.kind == kind and again.encode(TRICKY) == tok.encode(TRICKY)


def test_char_fast_path_equals_the_hf_pipeline():
    tok = Tokenizer.train("char", [TRICKY[:-6]])
    assert tok.encode(TRICKY) == tok.hf.encode(TRICKY, add_special_tokens=False).ids
    assert tok.decode(tok.encode("Z")) == "\ufffd"  # unseen -> <unk>, shown as the replacement character


def test_word_normalisation_and_eos():
    text = "The  cat\tsat \nON the mat.\n\nthe end"
    tok = Tokenizer.train("word", [text], lowercase=True)
    ids = tok.encode(text)
    assert tok.id_to_token(ids[3]) == "<eos>"
    assert tok.decode(ids) == "the cat sat\non the mat.\n\nthe end"
    rare = Tokenizer.train("word", ["a a a b"], min_freq=2)
    assert rare.decode(rare.encode("a b")) == "a <unk>"


def test_word_vocab_size_keeps_most_frequent():
    tok = Tokenizer.train("word", ["x x x y y z"], vocab_size=4)
    assert tok.vocab_size == 4 and tok.token_to_id("z") is None and tok.token_to_id("x") is not None


def test_word_corpus_that_already_spells_unk():
    # PTB writes rare words as `<unk>`: it must stay our one `<unk>` id, not become a second word.
    tok = Tokenizer.train("word", ["a <unk> b <unk>\nc <unk>"])
    assert tok.vocab_size == 5 and tok.encode("<unk> zzz") == [tok.unk_id, tok.unk_id]


def test_file_opens_in_the_tokenizers_library(tmp_path):
    for kind in ("char", "word", "bpe"):
        tok = Tokenizer.train(kind, ["some text to learn from\nand more"], vocab_size=280)
        tok.save(tmp_path / "tokenizer.json")
        hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
        assert hf.encode("some text", add_special_tokens=False).ids == tok.encode("some text")


def test_bad_kind_and_bad_file(tmp_path):
    with pytest.raises(UserInputError, match="tokenizer must be one of"):
        Tokenizer.train("sentencepiece", ["x"])
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFolderError, match="not a valid tokenizer.json"):
        Tokenizer.load(bad)


def test_bpe_parallel_line_encoding_equals_whole_text():
    text = "Hello there\n\n  indented line\r\n\tTabbed\n\n\nEnd  of  text \n" * 20
    tok = Tokenizer.train("bpe", [text], vocab_size=320)
    assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids


def test_a_capped_word_vocabulary_says_what_it_leaves_out(capsys):
    text = ["a a a a b b b c c d e f"]
    tok = Tokenizer.train("word", text, vocab_size=4)  # <unk>, <eos> and two words
    assert tok.encode("a b c") == [tok.encode("a")[0], tok.encode("b")[0], 0]
    err = capsys.readouterr().err
    assert "keeps 2 of 6 words" in err and "41.7% of the training words become <unk>" in err
    Tokenizer.train("word", text, vocab_size=100)
    assert capsys.readouterr().err == ""
