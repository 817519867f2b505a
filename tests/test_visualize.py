"""lstmgen inspect: the recorded gates are the model's, the cell search finds a planted cell, and the
report opens in headless Chromium with its heatmaps and hover."""
import pytest
import torch

import lstmgen
from lstmgen.visualize import correlations, find_cells, parse_cells, text_features, trace, write_png, write_report

TEXT = 'KING:\nNow is the winter (of our) discontent,\n"Made glorious" summer by this sun.\n'


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return lstmgen.load(tiny_model_dir)


@pytest.fixture(scope="module")
def tr(tiny):
    return trace(tiny, TEXT)


def test_recorded_gates_are_the_models(tiny, tr):
    a = tr.acts
    prev = torch.cat([torch.zeros_like(a["c"][:, :1]), a["c"][:, :-1]], 1)
    assert torch.allclose(a["c"], a["f"] * prev + a["i"] * a["g"], atol=1e-5)  # c_t = f c_{t-1} + i g
    assert torch.allclose(a["h"], a["o"] * torch.tanh(a["c"]), atol=1e-5)  # h_t = o tanh(c_t)
    with torch.no_grad():
        logits, (h, c) = tiny.model(torch.tensor([tr.ids]))  # the fused kernel
    assert torch.allclose(a["h"][:, -1], h[:, 0], atol=1e-5) and torch.allclose(a["c"][:, -1], c[:, 0], atol=1e-5)
    probs = logits[0].softmax(-1)
    for t in (0, len(tr.ids) // 2, len(tr.ids) - 1):
        assert [p for _, p in tr.top5[t]] == pytest.approx(probs[t].topk(5).values.tolist(), abs=1e-5)
    assert "".join(tr.pieces) == TEXT


def test_features_and_the_search_find_a_planted_cell(tr):
    f = text_features(tr.pieces)
    assert f["inside quotes"][TEXT.index('"M')] == 1 and f["inside quotes"][TEXT.index(" summer")] == 0
    assert f["inside brackets"][TEXT.index("(of") + 1] == 1 and f["position in line"][TEXT.index("\nNow") + 1] == 1
    planted = tr.acts["c"].clone()
    planted[1, :, 7] = torch.tensor(f["position in line"]) * 0.01 - 0.3
    tr2 = type(tr)(tr.pieces, tr.ids, dict(tr.acts, c=planted), tr.top5)
    best = [d for d in find_cells(tr2) if d["feature"] == "position in line"][0]
    assert (best["layer"], best["unit"]) == (1, 7) and best["r"] == pytest.approx(1.0)
    assert torch.isnan(correlations(torch.ones(5, 2), [1, 2, 3, 4, 5])).all()  # a constant cell: no answer
    assert parse_cells("1:3,0:2") == [(1, 3), (0, 2)]
    with pytest.raises(ValueError, match="layer:unit"):
        parse_cells("7")


def test_report_opens_in_chromium(tr, tmp_path, browser):
    path = write_report(tr, tmp_path / "report.html", cells=[(0, 3)], top=3)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    heatmaps = page.locator(".heatmap")
    assert heatmaps.count() == 4 * 4  # 3 found cells + 1 chosen, each as c, i, f, o
    assert page.locator(".heatmap").first.locator(".tok").count() == len(tr.pieces)
    page.locator(".tok").nth(1).hover()  # "I" of KING
    assert "next:" in page.text_content("#tip") and page.is_visible("#tip")
    shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(shot) > 10_000 and not errors, errors
    page.close()


def test_png_and_cli(tiny_model_dir, tmp_path, capsys):
    from lstmgen.cli import main

    assert main(["inspect", str(tiny_model_dir), "--text", TEXT, "--out", str(tmp_path / "r.html"), "--png",
                 str(tmp_path / "r.png"), "--cells", "0:1"]) == 0
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "position in line" in capsys.readouterr().out
    assert main(["inspect", str(tiny_model_dir), "--text", TEXT, "--cells", "9:0"]) == 2


def test_png_directly(tr, tmp_path):
    assert write_png(tr, tmp_path / "x.png", top=2).stat().st_size > 5_000


def test_a_mogrifier_model_is_refused(tiny):
    """The read-out runs the plain LSTM equations, which are not a Mogrifier LSTM's."""
    from lstmgen.errors import UserInputError
    from lstmgen.models import LanguageModel, LMConfig
    from lstmgen.pipelines import TextGenerator

    model = LanguageModel(LMConfig(vocab_size=tiny.tokenizer.vocab_size, hidden_size=8, num_layers=1,
                                   backend="reference", mogrifier_rounds=2))
    with pytest.raises(UserInputError, match="Mogrifier"):
        trace(TextGenerator(model, tiny.tokenizer), TEXT)
