"""Corpus metrics over one task's scored examples: accuracy, chrF, ROUGE-L; corpus BLEU.

A scored example is a dict with `correct` (bool), `prediction` (the extracted answer or
None) and `gold`. Text metrics compare the prediction (empty when none was found) with
the gold answer: for a translation task the extracted answer is the translation.
chrF and BLEU come from sacrebleu with its defaults (chrF: character 6-grams, beta 2;
BLEU: the "13a" tokenizer) and are on sacrebleu's 0-100 scale; accuracy and ROUGE-L are
fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sacrebleu


def _text(value) -> str:
    return "" if value is None else str(value)


def accuracy(rows: Sequence[dict]) -> float:
    """Correct / all: an example without an answer counts as wrong (Study B)."""
    if not rows:
        raise ValueError("accuracy of zero examples is undefined")
    return sum(bool(r["correct"]) for r in rows) / len(rows)


def chrf(rows: Sequence[dict]) -> float:
    hyps = [_text(r["prediction"]) for r in rows]
    refs = [_text(r["gold"]) for r in rows]
    return float(sacrebleu.corpus_chrf(hyps, [refs]).score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize="13a") -> float:
    """sacrebleu corpus BLEU of hypotheses against one reference each (0-100)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    # force: text is scored as given; built-in data is space-tokenized ("15 .") on purpose.
    bleu = sacrebleu.corpus_bleu(
        list(hypotheses), [list(references)], tokenize=tokenize, force=True
    )
    return float(bleu.score)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_pair(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased whitespace tokens (no stemming)."""
    h, r = hypothesis.lower().split(), reference.lower().split()
    if not h or not r:
        return 0.0
    lcs = _lcs(h, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(h), lcs / len(r)
    return 2 * p * rec / (p + rec)


def rouge_l(rows: Sequence[dict]) -> float:
    """Mean ROUGE-L F1 over examples."""
    if not rows:
        raise ValueError("ROUGE-L of zero examples is undefined")
    return sum(rouge_l_pair(_text(r["prediction"]), _text(r["gold"])) for r in rows) / len(rows)


METRICS: dict[str, Callable[[Sequence[dict]], float]] = {
    "accuracy": accuracy,
    "chrf": chrf,
    "rouge_l": rouge_l,
}
