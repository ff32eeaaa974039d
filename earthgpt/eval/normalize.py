"""Answer normalisation shared by the classification and VQA metrics.

Two short answers are *the same* when their :func:`answer_key` is equal. The key is built in
this order (each step is a plain string rule, no model, no dictionary beyond the lists below):

1. camelCase is split (``"BareLand"`` → ``"Bare Land"``), then everything is lower-cased;
2. underscores, hyphens and slashes become spaces;
3. a full stop between two digits is kept (``"2.5"``); every other punctuation character is dropped;
4. the articles ``a``, ``an``, ``the`` are removed as whole words (unless nothing else is left);
5. number words become digits (``"two"`` → ``"2"``, ``"twenty one"`` → ``"21"``, up to the thousands);
6. whitespace is collapsed (this is :func:`normalize_answer`), and for the key all spaces are removed,
   so ``"bare land"``, ``"bareland"`` and ``"BareLand"`` match, as do ``"0 m2"`` and ``"0m2"``.

:func:`normalize_answer` (step 1–6 without removing spaces) is what reports show as a class name.
"""

from __future__ import annotations

import re
import string

ARTICLES = frozenset({"a", "an", "the"})

# fmt: off
_UNIT_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TEN_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# fmt: on
_UNITS = {word: value for value, word in enumerate(_UNIT_WORDS)}
_TENS = {word: 10 * k for k, word in enumerate(_TEN_WORDS, start=2)}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_SCALES)

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_SPACERS = re.compile(r"[_\-/]")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_DROP = str.maketrans("", "", string.punctuation)
_POINT_MARK = "\x00"


def _words_to_number(words: list[str]) -> int:
    """Value of a run of English number words (``["twenty", "one"]`` → 21)."""
    total, current = 0, 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:  # thousand
            total += max(current, 1) * 1000
            current = 0
    return total + current


def _replace_number_words(tokens: list[str]) -> list[str]:
    out: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if token in _NUMBER_WORDS or (run and token == "and" and run[-1] == "hundred"):
            run.append(token)
            continue
        if run:
            trailing_and = run[-1] == "and"
            out.append(str(_words_to_number([w for w in run if w != "and"])))
            if trailing_and:
                out.append("and")
            run = []
        if token:
            out.append(token)
    return out


def normalize_answer(text: str) -> str:
    """Normalised, space-separated form of a short answer (steps 1–5 and whitespace collapse)."""
    text = _CAMEL.sub(" ", str(text)).lower()
    text = _SPACERS.sub(" ", text)
    text = _DECIMAL_POINT.sub(_POINT_MARK, text).translate(_DROP).replace(_POINT_MARK, ".")
    tokens = [t for t in text.split() if t not in ARTICLES] or text.split()
    return " ".join(_replace_number_words(tokens))


def answer_key(text: str) -> str:
    """Comparison key of a short answer: :func:`normalize_answer` with all spaces removed."""
    return normalize_answer(text).replace(" ", "")
