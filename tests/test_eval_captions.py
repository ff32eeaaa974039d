"""Caption metrics: hand-worked values and a cross-check against pycocoevalcap on real RSICD captions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from earthgpt.eval.captions import bleu, caption_metrics, cider_d, lcs_length, rouge_l, tokenize


def test_tokenize() -> None:
    expected = ["many", "buildings", "and", "a", "2.5", "m2", "pool"]
    assert tokenize("Many buildings, and a 2.5 m2 pool.") == expected
    assert tokenize("the building's roof") == ["the", "building", "'s", "roof"]
    assert tokenize(" ... ") == []


def test_two_caption_bleu_by_hand() -> None:
    # item 1: cand "green trees near river", ref "green trees near road"
    # item 2: cand "many cars",              ref "many cars parked"
    # 1-grams: 3 of 4 + 2 of 2 -> 5/6;  2-grams: 2 of 3 + 1 of 1 -> 3/4
    # 3-grams: 1 of 2 + 0 of 0 -> 1/2;  4-grams: 0 of 1 -> 0 (pycocoevalcap adds 1e-15, not exactly 0)
    # lengths: candidate 6, closest reference 4 + 3 = 7 -> BP = exp(1 - 7/6)
    cands = ["green trees near river", "many cars"]
    refs = [["green trees near road"], ["many cars parked"]]
    result = caption_metrics(cands, refs)
    bp = math.exp(1 - 7 / 6)
    assert result["bleu_1"] == pytest.approx(5 / 6 * bp, abs=1e-9)
    assert result["bleu_2"] == pytest.approx((5 / 6 * 3 / 4) ** (1 / 2) * bp, abs=1e-9)
    assert result["bleu_3"] == pytest.approx((5 / 6 * 3 / 4 * 1 / 2) ** (1 / 3) * bp, abs=1e-9)
    assert 0 < result["bleu_4"] < 1e-3
    # ROUGE-L: item 1 LCS 3, P = R = 3/4 -> F = 3/4;
    #          item 2 LCS 2, P = 1, R = 2/3 -> F = 2.44 * (2/3) / (2/3 + 1.44)
    item2 = 2.44 * (2 / 3) / (2 / 3 + 1.44)
    assert result["rouge_l"] == pytest.approx((0.75 + item2) / 2, abs=1e-12)


def test_identical_captions_score_high_and_disjoint_zero() -> None:
    refs = [["a large airport with planes"], ["a dense residential area"]]
    perfect = caption_metrics(["a large airport with planes", "a dense residential area"], refs)
    assert perfect["bleu_1"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["cider"] > 0
    wrong = caption_metrics(["zzz qqq", ""], refs)
    assert wrong["bleu_1"] < 1e-6 and wrong["rouge_l"] == 0 and wrong["cider"] == 0


def test_lcs_length() -> None:
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length([], ["a"]) == 0


def test_empty_corpus_and_mismatch() -> None:
    assert math.isnan(caption_metrics([], [])["cider"])
    with pytest.raises(ValueError, match="one reference list per candidate"):
        bleu([["a"]], [])
    with pytest.raises(ValueError, match="no reference captions"):
        cider_d([["a"]], [[]])


def _rsicd_items(data: Path, count: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    cands, refs = [], []
    with (data / "rsicd" / "captions_all.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            captions = row.get("captions_orig") or row["captions_textaug"]
            tokens = [tokenize(c) for c in captions]
            if row["split"] != "test" or len(tokens) < 2 or not all(tokens):
                continue
            cands.append(tokens[0])
            refs.append(tokens[1:])
            if len(cands) == count:
                break
    return cands, refs


def test_matches_pycocoevalcap_on_rsicd(shared_data: Path) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    cands, refs = _rsicd_items(shared_data, 200)
    assert len(cands) == 200
    res = {i: [" ".join(c)] for i, c in enumerate(cands)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    expected_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected_cider, _ = Cider().compute_score(gts, res)
    expected_rouge, _ = Rouge().compute_score(gts, res)
    assert bleu(cands, refs) == pytest.approx(expected_bleu, abs=1e-6)
    cider = cider_d(cands, refs)
    assert sum(cider) / len(cider) == pytest.approx(expected_cider, abs=1e-6)
    rouge = rouge_l(cands, refs)
    assert sum(rouge) / len(rouge) == pytest.approx(expected_rouge, abs=1e-6)
    assert 0.5 < expected_cider < 3  # a real, non-degenerate corpus
