"""Scores of generated text against references: BLEU and chrF (sacrebleu), ROUGE (rouge-score), and SQuAD's
exact match and token F1.

sacrebleu computes BLEU on detokenized text with its own tokenizer, so figures compare across papers that
report sacreBLEU; its signature (printed with the scores) says exactly how. The SQuAD answer
normalization is the official evaluation script's (lowercase, no punctuation, no articles, single spaces).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, List, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def bleu_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> Dict:
    """Corpus BLEU and chrF (0-100) with their sacrebleu signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> Dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-Lsum F1 (0-100), Porter-stemmed, as rouge-score reports them."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    total = Counter()
    for hyp, ref in zip(hypotheses, references):
        # rougeLsum treats lines as sentences; one-line texts are one sentence.
        for k, s in scorer.score(ref, hyp).items():
            total[k] += s.fmeasure
    n = max(len(hypotheses), 1)
    return {k: round(100 * total[k] / n, 2) for k in keys}


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lowercase, punctuation and articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(hyp: str, ref: str) -> float:
    h, r = normalize_answer(hyp).split(), normalize_answer(ref).split()
    common = sum((Counter(h) & Counter(r)).values())
    if not h or not r:
        return float(h == r)
    if common == 0:
        return 0.0
    p, rec = common / len(h), common / len(r)
    return 2 * p * rec / (p + rec)


def squad_scores(hypotheses: Sequence[str], references: Sequence[str]) -> Dict:
    """Exact match and token F1 (0-100), SQuAD's definitions."""
    n = max(len(hypotheses), 1)
    em = sum(normalize_answer(h) == normalize_answer(r) for h, r in zip(hypotheses, references))
    f1 = sum(_token_f1(h, r) for h, r in zip(hypotheses, references))
    return {"exact_match": round(100 * em / n, 2), "f1": round(100 * f1 / n, 2)}


def text_scores(task: str, hypotheses: List[str], references: List[str]) -> Dict:
    """The figures a task is judged by: translation BLEU/chrF, summarization ROUGE (+ BLEU),
    question answering exact match / F1."""
    if task == "summarization":
        return {**rouge(hypotheses, references), **bleu_chrf(hypotheses, references)}
    if task == "question-answering":
        return {**squad_scores(hypotheses, references), **bleu_chrf(hypotheses, references)}
    return bleu_chrf(hypotheses, references)
