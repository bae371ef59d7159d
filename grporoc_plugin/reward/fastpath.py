"""Verdicts that need no math_verify call, identical to math_verify's own, and a verdict cache.

The reference is what :func:`grporoc_plugin.reward.verify.math_verify_equivalent` returns: ``parse`` of
``"\\boxed{" + answer + "}"`` (LaTeX + plain-expression extraction) against ``parse`` of each ground truth (LaTeX
extraction), then ``verify``. Two facts about math_verify 0.9 make most verdicts predictable without sympy:

1. **Normalised exact match.** ``parse`` returns ``[sympy_expr, fallback_string]`` and ``verify`` compares every
   pair, including the two fallback strings, which match when equal and non-empty. For a boxed answer without the
   word "answer" (math_verify's "final answer is ..." patterns are the only ones that can win over the ``\\boxed``
   pattern), the fallback string is ``normalize_latex(text, boxed="last")`` of math_verify's LaTeX config. Equal
   normalised strings therefore mean *correct*, whatever sympy would say. We call math_verify's own normaliser, so
   this holds by construction, not by imitation.
2. **Plain values.** When the normalised text is an integer (``-12``, ``007``, ``1,000,000``), a decimal (``2.50``),
   a fraction of integers (``\\frac{3}{6}``, ``-\\frac{1}{2}``) or an integer or decimal in degrees (``90^\\circ``,
   which latex2sympy reads as 90), latex2sympy yields an Integer, Float or Rational of exactly that value, and
   ``verify`` compares them as follows (``sympy_expr_eq``):

   * no Float on either side: exact equality;
   * a Float and an Integer: exact equality (``Integer.round`` stays an Integer, never equal to a Float; then
     ``simplify(a - b).is_zero``);
   * a Float and a Float/Rational: equal after rounding both to 6 decimals (``Expr.round(6)``, half to even), where
     the rounded Floats carry ``_mag(x) + 6`` digits: equal values or different roundings are decided here; equal
     roundings of different values only when both have the same magnitude, else math_verify decides.

   ``k\\sqrt{m}`` (m not a square) and ``k\\pi`` (k != 0) are irrational: never equal to an Integer or Rational
   (exact comparison, then ``simplify``), left to math_verify against a Float. One side ``v = <value>`` (a single
   letter other than e, i, E, I) against a plain value on the other: ``verify`` compares the right-hand side (an
   equation is unwrapped when the gold is not one, an assignment gold when the answer is not one).

   Anything near a boundary (a rounding tie, a power of ten, magnitudes below 1e-3 or at or above 1e6, more than 15
   significant digits, a zero denominator) is left to math_verify.

Everything else returns ``None`` ("not sure") and goes to math_verify in a worker process, whose verdict the
:class:`VerdictCache` keeps: answers repeat within a group. ``tests/reward/test_reward_fastpath.py`` checks every
rule against math_verify on the answer-pair corpus (``tests/reward/data/answer_pairs.jsonl``), pair by pair.

Both rules encode how math_verify 0.9 / latex2sympy2_extended 1.11 / sympy 1.14 behave; :func:`fast_rules_supported`
says whether the installed versions are those the rules were checked against. :class:`VerifierPool` uses the rules
only then, and the cache (exact by construction) always.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Literal

__all__ = [
    "VerdictCache",
    "clear_caches",
    "fast_rules_supported",
    "fast_verdict",
    "normalized_text",
    "plain_number",
]

#: (distribution, version prefix) pairs the rules were checked against on the corpus (constraints.txt pins these).
CHECKED_VERSIONS: tuple[tuple[str, str], ...] = (
    ("math-verify", "0.9."),
    ("latex2sympy2_extended", "1.11."),
    ("sympy", "1.14."),
)

_INT = re.compile(r"[+-]?\d+")
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+")
_DECIMAL = re.compile(r"[+-]?(\d+)\.(\d+)")
_FRAC = re.compile(r"(-?)\\frac\{(-?)(\d+)\}\{(\d+)\}")
_DEGREES = re.compile(r"(-?\d+(?:\.\d+)?)\^(?:\\circ|\{\\circ\})")
_IRRATIONAL = re.compile(r"(-?)(\d*)\\(?:sqrt\{(\d+)\}|(pi))")
_EQUATION = re.compile(r"([a-df-hj-zA-DF-HJ-Z])\s*=\s*([^=]+)")
_MAX_SIG_DIGITS = 15  # latex2sympy gives a Float of max(15, digits) digits; 15 keeps every Float at 15
_FLOAT_MIN, _FLOAT_MAX = Fraction(1, 1000), Fraction(10**6)
_TIE_MARGIN = Fraction(1, 1000)  # in units of 1e-6: rounding within this of a tie is left to math_verify
_SCALE = 10**6  # verify(float_rounding=6)

Kind = Literal["I", "R", "F", "X"]


@dataclasses.dataclass(frozen=True)
class Number:
    """A value latex2sympy parses to a plain number: kind I (Integer), R (non-integer Rational), F (Float) or
    X (irrational; ``value`` is None)."""

    kind: Kind
    value: Fraction | None


# ------------------------------------------------------------------------------------------------------ versions
@lru_cache(maxsize=1)
def fast_rules_supported() -> tuple[bool, str]:
    """(True, "") when the installed libraries are the versions the rules were checked against, else (False, why)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist, prefix in CHECKED_VERSIONS:
        try:
            found = version(dist)
        except PackageNotFoundError:
            return False, f"{dist} is not installed"
        if not found.startswith(prefix):
            return False, f"{dist} {found} (rules checked against {prefix}x)"
    return True, ""


# ------------------------------------------------------------------------------------------------------- numbers
def plain_number(text: str, *, top_level: bool = True) -> Number | None:
    """The value latex2sympy makes of the *normalised* ``text``, or None when it is not a plain value.

    ``top_level=False`` is for the right-hand side of an equation, where latex2sympy reads ``1,000`` as a set.
    """
    text = text.strip()
    if _INT.fullmatch(text):
        return Number("I", Fraction(int(text)))
    if top_level and _THOUSANDS.fullmatch(text):
        return Number("I", Fraction(int(text.replace(",", ""))))
    m = _DECIMAL.fullmatch(text)
    if m:
        digits = (m.group(1) + m.group(2)).lstrip("0")
        return Number("F", Fraction(text)) if len(digits) <= _MAX_SIG_DIGITS else None
    m = _FRAC.fullmatch(text)
    if m:
        den = int(m.group(4))
        if den == 0:
            return None  # zoo: math_verify refuses to compare it
        value = Fraction(int(m.group(3)), den) * (-1 if m.group(1) else 1) * (-1 if m.group(2) else 1)
        return Number("I" if value.denominator == 1 else "R", value)
    m = _DEGREES.fullmatch(text)
    if m:
        return plain_number(m.group(1), top_level=False)
    m = _IRRATIONAL.fullmatch(text)
    if m:
        factor = int(m.group(2)) if m.group(2) else 1
        radicand = int(m.group(3)) if m.group(3) else None
        if factor == 0 or (radicand is not None and math.isqrt(radicand) ** 2 == radicand):
            return None  # a rational after all
        return Number("X", None)
    return None


def _equation_rhs(text: str) -> Number | None:
    """The right-hand side of ``v = <plain value>``, or None."""
    m = _EQUATION.fullmatch(text.strip())
    return plain_number(m.group(2), top_level=False) if m else None


_RAW_INT = re.compile(r"\s*[+-]?\d+\s*")
_RAW_DECIMAL = re.compile(r"\s*[+-]?\d+\.\d+\s*")


def _raw_number(text: str) -> Number | None:
    """``plain_number(normalized_text(text))`` for bare integers and decimals, without running the normaliser.

    For these strings math_verify's normalisation only strips the surrounding space and rewrites ``0.5`` as
    ``\\frac{1}{2}`` (its "nits" step), which makes it a Rational.
    """
    if _RAW_INT.fullmatch(text):
        return Number("I", Fraction(int(text)))
    if _RAW_DECIMAL.fullmatch(text):
        stripped = text.strip()
        if stripped == "0.5":
            return Number("R", Fraction(1, 2))
        return plain_number(stripped)
    return None


def _round6(value: Fraction) -> int | None:
    """round(value, 6) half to even, in units of 1e-6; None within ``_TIE_MARGIN`` of a tie."""
    scaled = value * _SCALE
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if abs(rest - Fraction(1, 2)) < _TIE_MARGIN:
        return None
    return floor + (1 if rest > Fraction(1, 2) else 0)


def _magnitude(value: Fraction) -> int | None:
    """sympy's ``_mag``: i with 0.1 <= |value| / 10**i < 1; None within 1e-9 (relative) of a power of ten."""
    x = abs(value)
    i = len(str(x.numerator // x.denominator)) if x >= 1 else 0
    while x < Fraction(10) ** (i - 1):
        i -= 1
    lower = Fraction(10) ** (i - 1)
    if x < lower * (1 + Fraction(1, 10**9)) or x > lower * 10 * (1 - Fraction(1, 10**9)):
        return None
    return i


def _compare_numbers(gold: Number, pred: Number) -> bool | None:
    """math_verify's verdict on two plain values, or None when it depends on Float precision details."""
    if "X" in (gold.kind, pred.kind):
        other = pred.kind if gold.kind == "X" else gold.kind
        return False if other in ("I", "R") else None  # irrational vs rational; vs Float: rounding decides
    assert gold.value is not None and pred.value is not None
    if gold.value == pred.value:
        return True
    if "F" not in (gold.kind, pred.kind):
        return False  # Integer/Rational: exact comparison
    if "I" in (gold.kind, pred.kind):
        return False  # Integer vs Float: Integer.round(6) is an Integer, never equal to a Float; values differ
    lo, hi = sorted((abs(gold.value), abs(pred.value)))
    if lo < _FLOAT_MIN or hi >= _FLOAT_MAX:
        return None
    r_gold, r_pred = _round6(gold.value), _round6(pred.value)
    if r_gold is None or r_pred is None:
        return None
    if r_gold != r_pred:
        return False
    mag_gold, mag_pred = _magnitude(gold.value), _magnitude(pred.value)
    if mag_gold is None or mag_gold != mag_pred:
        return None
    return True  # both round to the same Float of the same precision


# ---------------------------------------------------------------------------------------------- normalisation
_NORMALIZE = None


def _normalizer():
    global _NORMALIZE
    if _NORMALIZE is None:
        from dataclasses import replace

        from latex2sympy2_extended import normalize_latex
        from math_verify import LatexExtractionConfig

        config = replace(LatexExtractionConfig().normalization_config, boxed="last")
        _NORMALIZE = lambda text: normalize_latex(text, config=config)  # noqa: E731
    return _NORMALIZE


@lru_cache(maxsize=16384)
def normalized_text(text: str) -> str | None:
    """math_verify's fallback string for ``\\boxed{text}``, stripped; None when it is not the fallback (the text
    contains "answer", so a "final answer is" pattern may win) or is empty."""
    if _RAW_INT.fullmatch(text) or _RAW_DECIMAL.fullmatch(text):  # what the normaliser returns for these
        stripped = text.strip()
        return "\\frac{1}{2}" if stripped == "0.5" else stripped
    if "answer" in text.lower():
        return None
    out = _normalizer()("\\boxed{" + text + "}").strip()
    return out or None


@lru_cache(maxsize=16384)
def _normalized_values(text: str) -> tuple[Number | None, Number | None]:
    """(plain value, right-hand side of ``v = <value>``) of the normalised ``text``."""
    norm = normalized_text(text)
    if norm is None:
        return None, None
    return plain_number(norm), _equation_rhs(norm)


def clear_caches() -> None:
    """Forget every normalised string (benchmarks start each run cold)."""
    normalized_text.cache_clear()
    _normalized_values.cache_clear()


# --------------------------------------------------------------------------------------------------- verdicts
def fast_verdict(
    answer: str, golds: Sequence[str], *, number_rules: bool = True, normalize: bool = True
) -> bool | None:
    """math_verify's verdict on ``answer`` against any of ``golds`` when it is certain without sympy, else None.

    ``normalize=False`` skips everything that runs math_verify's normaliser (~0.1 ms per new string), leaving the
    values of bare integers and decimals: cheap enough for the event loop. ``number_rules=False`` keeps rule 1, the
    normalised exact match, only.
    """
    undecided = False
    for gold in golds:
        verdict = _gold_verdict(answer, gold, number_rules, normalize)
        if verdict:
            return True
        undecided |= verdict is None
    return None if undecided else False


def _gold_verdict(answer: str, gold: str, number_rules: bool, normalize: bool) -> bool | None:
    if number_rules:
        pred_num, gold_num = _raw_number(answer), _raw_number(gold)
        if pred_num is not None and gold_num is not None:
            return _compare_numbers(gold_num, pred_num)
    if not normalize:
        return None
    pred_norm, gold_norm = normalized_text(answer), normalized_text(gold)
    if pred_norm is None or gold_norm is None:
        return None
    if pred_norm == gold_norm:
        return True
    if not number_rules:
        return None
    (pred_num, pred_rhs), (gold_num, gold_rhs) = _normalized_values(answer), _normalized_values(gold)
    if pred_num is not None and gold_num is not None:
        return _compare_numbers(gold_num, pred_num)
    if pred_rhs is not None and gold_num is not None:  # answer "x = 5", gold "5": verify compares the rhs
        return _compare_numbers(gold_num, pred_rhs)
    if gold_rhs is not None and pred_num is not None:  # gold "x = 5" (an assignment), answer "5"
        return _compare_numbers(gold_rhs, pred_num)
    return None


# ------------------------------------------------------------------------------------------------------- cache
class VerdictCache:
    """Thread-safe LRU of verdicts keyed by (answer, ground truths); ``maxsize=0`` disables it."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(0, int(maxsize))
        self._data: OrderedDict[tuple[str, tuple[str, ...]], bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, tuple[str, ...]]) -> bool | None:
        if not self.maxsize:
            return None
        with self._lock:
            verdict = self._data.get(key)
            if verdict is not None:
                self._data.move_to_end(key)
            return verdict

    def put(self, key: tuple[str, tuple[str, ...]], verdict: bool) -> None:
        if not self.maxsize:
            return
        with self._lock:
            self._data[key] = verdict
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
