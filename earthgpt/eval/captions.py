"""Caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D, computed as pycocoevalcap computes them.

Every metric takes, per item (image or region), one candidate caption and one or more references.
Captions are first split into tokens by :func:`tokenize` (pycocoevalcap's PTBTokenizer needs Java;
this tokenizer is a documented stand-in, so scores are comparable across our runs and within ~1%
of the Java-tokenised numbers, not identical to them). Given the same token lists the three
scorers reproduce pycocoevalcap's ``Bleu(4)``, ``Rouge`` and ``Cider`` to floating-point precision
(``tests/test_eval_captions.py`` checks this on real RSICD captions).

Definitions (``c`` a candidate, ``R`` its references, ``N`` the number of items):

- **BLEU-n** (corpus level, ``Bleu.compute_score`` with ``option="closest"``): clipped n-gram
  matches ``m_k = Σ_items Σ_g min(count_c(g), max_r count_r(g))`` and guesses
  ``g_k = Σ_items max(0, |c| − k + 1)``; ``BLEU-n = (Π_{k≤n} (m_k + 1e-15)/(g_k + 1e-9))^{1/n} · BP``
  with ``BP = exp(1 − L_r/L_c)`` when ``L_c < L_r``, else 1. ``L_c = Σ|c|`` and ``L_r`` is the sum
  over items of the reference length closest to ``|c|`` (ties: the shorter).
- **ROUGE-L** (mean over items): ``P = max_r LCS(c, r)/|c|``, ``R = max_r LCS(c, r)/|r|`` (each
  maximised on its own), ``F = (1 + β²)·P·R / (R + β²·P)`` with ``β = 1.2``; 0 when P or R is 0.
- **CIDEr-D** (mean over items, ×10): n-grams 1..4; document frequency ``df(g)`` = number of items
  whose *reference set* contains ``g`` (computed on the references of the scored corpus itself);
  weights ``tf(g) · (log N − log max(1, df(g)))``; per n the clipped cosine
  ``Σ_g min(v_c(g), v_r(g)) · v_r(g) / (‖v_c‖ ‖v_r‖)`` times the length penalty
  ``exp(−δ²/(2σ²))``, ``σ = 6``, where δ is the difference in bigram counts (pycocoevalcap counts
  bigrams as the "length"; for non-empty captions this equals the word-count difference);
  averaged over n = 1..4, averaged over the references, times 10.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

Tokens = Sequence[str]

_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)*|[^\W\d_]+(?:[0-9]+[^\W\d_]*)*|'[^\W\d_]+")
BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
MAX_N = 4


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``; punctuation is dropped.

    A token is a run of letters (optionally followed by digits and letters, e.g. ``"m2"``), a
    number (``"2"``, ``"2.5"``), or a clitic starting with an apostrophe (``"building's"`` →
    ``["building", "'s"]``, as the PTB tokenizer splits it). Everything else (``.,;:!?"()-`` …)
    separates tokens and is not itself a token, like the punctuation PTBTokenizer removes.
    """
    return _TOKEN.findall(str(text).lower())


def _ngrams(tokens: Tokens, n: int = MAX_N) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _check_items(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> None:
    if len(candidates) != len(references):
        raise ValueError(
            f"expected one reference list per candidate, got {len(candidates)} candidates "
            f"and {len(references)} reference lists"
        )
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"item {i} has no reference captions; every item needs at least one")


def bleu(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], n: int = MAX_N) -> list[float]:
    """Corpus BLEU-1..n on token lists; returns ``[BLEU-1, …, BLEU-n]`` (definition in the module doc)."""
    _check_items(candidates, references)
    matches, guesses = [0] * n, [0] * n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            max_ref |= _ngrams(ref, n)
        for gram, count in _ngrams(cand, n).items():
            matches[len(gram) - 1] += min(count, max_ref.get(gram, 0))
        for k in range(1, n + 1):
            guesses[k - 1] += max(0, len(cand) - k + 1)
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    scores, product = [], 1.0
    for k in range(n):
        product *= (matches[k] + BLEU_TINY) / (guesses[k] + BLEU_SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (cand_len + BLEU_TINY) / (ref_len + BLEU_SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> list[float]:
    """Per-item ROUGE-L F-scores (β = 1.2, definition in the module doc); the metric is their mean."""
    _check_items(candidates, references)
    scores = []
    for cand, refs in zip(candidates, references, strict=True):
        lcs = [lcs_length(r, cand) for r in refs]
        precision = max(lcs) / len(cand) if cand else 0.0
        recall = max((m / len(r) for m, r in zip(lcs, refs, strict=True) if r), default=0.0)
        if precision == 0 or recall == 0:
            scores.append(0.0)
            continue
        beta2 = ROUGE_BETA**2
        scores.append((1 + beta2) * precision * recall / (recall + beta2 * precision))
    return scores


def _tfidf(
    counts: Counter[tuple[str, ...]], doc_freq: Counter[tuple[str, ...]], log_n: float
) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(MAX_N)]
    for gram, tf in counts.items():
        vectors[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, doc_freq.get(gram, 0))))
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vectors]
    bigrams = sum(c for g, c in counts.items() if len(g) == 2)
    return vectors, norms, bigrams


def _cider_similarity(cand: tuple, ref: tuple) -> float:
    (vec_c, norm_c, len_c), (vec_r, norm_r, len_r) = cand, ref
    penalty = math.exp(-((len_c - len_r) ** 2) / (2 * CIDER_SIGMA**2))
    total = 0.0
    for n in range(MAX_N):
        value = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec_c[n].items())
        if norm_c[n] != 0 and norm_r[n] != 0:
            value /= norm_c[n] * norm_r[n]
        total += value * penalty
    return total / MAX_N


def cider_d(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> list[float]:
    """Per-item CIDEr-D scores (σ = 6, ×10, df from these references); the metric is their mean."""
    _check_items(candidates, references)
    ref_counts = [[_ngrams(r) for r in refs] for refs in references]
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for counts in ref_counts:
        doc_freq.update(set().union(*counts))
    log_n = math.log(float(len(candidates))) if candidates else 0.0
    scores = []
    for cand, counts in zip(candidates, ref_counts, strict=True):
        vec_c = _tfidf(_ngrams(cand), doc_freq, log_n)
        sims = [_cider_similarity(vec_c, _tfidf(c, doc_freq, log_n)) for c in counts]
        scores.append(10.0 * sum(sims) / len(sims))
    return scores


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr of raw caption strings (tokenised by :func:`tokenize`).

    Returns ``{"bleu_1": …, "bleu_4": …, "rouge_l": …, "cider": …, "n": items}``; scores are
    ``nan`` when there are no items.
    """
    cands = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in rs] for rs in references]
    _check_items(cands, refs)
    if not cands:
        names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
        return {**dict.fromkeys(names, float("nan")), "n": 0}
    result: dict[str, float] = {f"bleu_{k + 1}": s for k, s in enumerate(bleu(cands, refs))}
    rouge = rouge_l(cands, refs)
    cider = cider_d(cands, refs)
    result["rouge_l"] = sum(rouge) / len(rouge)
    result["cider"] = sum(cider) / len(cider)
    result["n"] = len(cands)
    return result
