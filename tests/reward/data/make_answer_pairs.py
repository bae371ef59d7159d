"""The answer-pair corpus: (extracted answer, ground truths) pairs and math_verify's verdict on each.

Deterministic (each category has its own seeded generator) and written to ``answer_pairs.jsonl`` next to this file,
one JSON object per line: ``category``, ``answer``, ``golds`` (list of str) and ``mv``, the reference verdict of
:func:`grporoc_plugin.reward.verify.math_verify_equivalent` (what the verifier's worker runs): ``true``, ``false``,
``"timeout"`` (not done within the worker's default soft deadline, 4.5 s) or ``"error"`` (it raised).

The categories cover what a math reward sees: integers (most of it), negative numbers, decimals with near misses at
the 6th decimal, fractions against decimals, ``\\frac``/``\\dfrac``/``a/b`` forms, thousands separators, percent,
units and degrees, intervals, sets and tuples, LaTeX spacing, symbolic expressions, equations, text answers,
scientific notation, malformed input, several accepted answers, identical strings, ``v = <value>`` equations,
multiples of square roots and pi, and a few expressions on which sympy never finishes.

Regenerate (about a minute; needs math_verify, no verl):
``.venv/bin/python tests/reward/data/make_answer_pairs.py`` (``--check`` recomputes the verdicts and compares).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

CORPUS = Path(__file__).with_name("answer_pairs.jsonl")
SOFT_TIMEOUT_S = 4.5  # VerifierPool's default: 0.9 * verify_timeout_s (5 s)

Pair = tuple[str, list[str]]


# ------------------------------------------------------------------------------------------------------- helpers
def _int(rng: random.Random) -> int:
    return rng.choice([rng.randint(0, 20), rng.randint(0, 999), rng.randint(1000, 10**6), rng.randint(10**6, 10**12)])


def _frac(rng: random.Random, big: bool = False) -> Fraction:
    den = rng.randint(2, 999 if big else 40)
    num = rng.randint(1, 3 * den)
    return Fraction(num, den)


def _dec(value: Fraction | float, places: int) -> str:
    """value rounded (half up) to ``places`` decimals, as a plain decimal string."""
    q = Fraction(value) * 10**places
    n = (q.numerator * 2 + q.denominator) // (2 * q.denominator)  # round half up
    sign = "-" if n < 0 else ""
    digits = str(abs(n)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}" if places else f"{sign}{digits}"


def _pick(rng: random.Random, options: list[tuple[float, Callable[[], Pair]]]) -> Pair:
    weights = [w for w, _ in options]
    return rng.choices([f for _, f in options], weights=weights)[0]()


def _group(n: int) -> str:
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------------- categories
def integer(rng: random.Random) -> Pair:
    g = _int(rng)
    s = str(g)
    return _pick(
        rng,
        [
            (35, lambda: (s, [s])),
            (20, lambda: (str(g + rng.choice([-2, -1, 1, 2, 10])), [s])),
            (5, lambda: (str(-g), [s])),
            (5, lambda: ("0" * rng.randint(1, 3) + s, [s])),
            (3, lambda: ("+" + s, [s])),
            (5, lambda: (" " * rng.randint(1, 2) + s + " ", [s])),
            (7, lambda: (s[::-1] if len(s) > 1 else s + "1", [s])),
            (5, lambda: (s + "0", [s])),
            (5, lambda: (s + "." + "0" * rng.randint(1, 3), [s])),
            (3, lambda: (s + "." + "0" * rng.randint(5, 8) + str(rng.randint(1, 9)), [s])),
            (4, lambda: (s, [s + ".0"])),
            (3, lambda: (s + ".", [s])),
        ],
    )


def integer_huge(rng: random.Random) -> Pair:
    n = rng.randint(15, 400)
    s = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
    last = str((int(s[-1]) + rng.randint(1, 9)) % 10)
    return _pick(
        rng,
        [
            (4, lambda: (s, [s])),
            (4, lambda: (s[:-1] + last, [s])),
            (1, lambda: ("00" + s, [s])),
            (1, lambda: (s[:15] + "." + s[15:20], [s[:15]])),
            (1, lambda: (s[:14] + "." + s[14:30], [s[:14] + "." + s[14:29]])),
        ],
    )


def negative(rng: random.Random) -> Pair:
    g = rng.randint(1, 5000)
    f = _frac(rng)
    fs = rf"\frac{{{f.numerator}}}{{{f.denominator}}}"
    return _pick(
        rng,
        [
            (4, lambda: (f"-{g}", [f"-{g}"])),
            (3, lambda: (f"{g}", [f"-{g}"])),
            (3, lambda: (f"-{g}", [f"{g}"])),
            (1, lambda: (f"- {g}", [f"-{g}"])),
            (1, lambda: (f"\u2212{g}", [f"-{g}"])),
            (1, lambda: (f"-({g})", [f"-{g}"])),
            (1, lambda: (f"(-{g})", [f"-{g}"])),
            (2, lambda: (f"-{fs}", [rf"\frac{{-{f.numerator}}}{{{f.denominator}}}"])),
            (2, lambda: (f"-{_dec(f, 6)}", [f"-{fs}"])),
            (1, lambda: ("-0", ["0"])),
            (1, lambda: ("-0.0", ["0"])),
            (1, lambda: (f"-{g}.5", [f"-{2 * g + 1}/2"])),
            (1, lambda: (f"--{g}", [f"{g}"])),
        ],
    )


def decimal(rng: random.Random) -> Pair:
    places = rng.randint(1, 8)
    mag = rng.choice([1e-5, 1e-3, 1e-1, 1, 10, 1000, 1e5, 1e7])
    x = Fraction(rng.uniform(-mag, mag) if rng.random() < 0.2 else rng.uniform(0, mag))
    s = _dec(x, places)
    step = Fraction(1, 10**places)
    return _pick(
        rng,
        [
            (3, lambda: (s, [s])),
            (2, lambda: (s + "0" * rng.randint(1, 3), [s])),
            (3, lambda: (_dec(Fraction(s) + step * rng.choice([-1, 1]), places), [s])),
            (3, lambda: (_dec(x, rng.randint(1, 8)), [_dec(x, rng.randint(1, 8))])),
            (2, lambda: (_dec(Fraction(s) + Fraction(rng.randint(1, 9), 10**7), places + 1), [s])),
            (2, lambda: (_dec(Fraction(s) + Fraction(5, 10**7), 7), [s])),
            (1, lambda: (s, [_dec(Fraction(s) + Fraction(rng.randint(1, 4), 10**8), 8)])),
        ],
    )


def number_edges(rng: random.Random) -> Pair:
    """Where math_verify's Float rules are delicate: 6th-decimal rounding ties, powers of ten, magnitudes below 1e-3
    and above 1e6, 15-17 significant digits, integers against nearly equal decimals."""
    k = rng.randint(1, 10**6)
    base = Fraction(k, 10**6)
    tie = base + Fraction(5, 10**7)
    p10 = Fraction(10) ** rng.randint(-4, 7)
    f = _frac(rng, big=True)
    n = rng.randint(0, 10**4)
    return _pick(
        rng,
        [
            (3, lambda: (_dec(tie, 7), [_dec(base, 6)])),
            (2, lambda: (_dec(tie + Fraction(rng.choice([-1, 1]), 10**9), 9), [_dec(tie, 7)])),
            (2, lambda: (_dec(p10 - Fraction(rng.randint(1, 9), 10**7), 7), [_dec(p10 + Fraction(1, 10**7), 7)])),
            (2, lambda: (_dec(p10, 8), [_dec(p10 + Fraction(rng.randint(1, 4), 10**8), 8)])),
            (
                2,
                lambda: (
                    _dec(Fraction(rng.randint(1, 999), 10**7), 7),
                    [_dec(Fraction(rng.randint(1, 999), 10**7), 7)],
                ),
            ),
            (2, lambda: (_dec(p10 * rng.randint(1, 9) + Fraction(1, 10**7), 7), [_dec(p10 * rng.randint(1, 9), 1)])),
            (2, lambda: (_dec(f, rng.randint(14, 17)), [rf"\frac{{{f.numerator}}}{{{f.denominator}}}"])),
            (2, lambda: (f"{n}.{'0' * rng.randint(5, 9)}{rng.randint(1, 9)}", [str(n)])),
            (2, lambda: (str(n), [f"{n}.{'0' * rng.randint(5, 9)}{rng.randint(1, 9)}"])),
            (2, lambda: (_dec(f * 10**7, rng.randint(1, 7)), [rf"\frac{{{f.numerator * 10**7}}}{{{f.denominator}}}"])),
            (2, lambda: (_dec(f, 6), [_dec(f, 7)])),
            (1, lambda: (_dec(base, 6), [_dec(base, 6) + "0" * rng.randint(1, 12)])),
        ],
    )


def fraction_decimal(rng: random.Random) -> Pair:
    f = _frac(rng, big=rng.random() < 0.3)
    fs = rf"\frac{{{f.numerator}}}{{{f.denominator}}}"
    places = rng.randint(1, 9)
    return _pick(
        rng,
        [
            (4, lambda: (_dec(f, places), [fs])),
            (3, lambda: (fs, [_dec(f, places)])),
            (1, lambda: ("0.5", [r"\frac{1}{2}"])),
            (1, lambda: (r"\frac{1}{2}", ["0.5"])),
            (1, lambda: ("0.5", ["1/2"])),
            (1, lambda: (".5", [r"\frac12"])),
            (2, lambda: (_dec(f + Fraction(1, 10**places), places), [fs])),
            (2, lambda: (_dec(f, places) + "1", [fs])),
            (1, lambda: (str(float(f)), [fs])),
        ],
    )


def fraction_forms(rng: random.Random) -> Pair:
    a, b = rng.randint(1, 9), rng.randint(2, 9)
    k = rng.randint(2, 5)
    f = rf"\frac{{{a}}}{{{b}}}"
    return _pick(
        rng,
        [
            (2, lambda: (rf"\dfrac{{{a}}}{{{b}}}", [f])),
            (2, lambda: (rf"\tfrac{{{a}}}{{{b}}}", [f])),
            (2, lambda: (rf"\frac{a}{b}", [f])),
            (2, lambda: (rf"\frac {a} {b}", [f])),
            (2, lambda: (f"{a}/{b}", [f])),
            (2, lambda: (rf"\frac{{{a * k}}}{{{b * k}}}", [f])),
            (2, lambda: (f"{a * k}/{b * k}", [f"{a}/{b}"])),
            (2, lambda: (rf"\frac{{{b}}}{{{a}}}", [f])),
            (2, lambda: (rf"\frac{{{a + 1}}}{{{b}}}", [f])),
            (1, lambda: (rf"\frac{{{a}}}{{0}}", [f])),
            (1, lambda: (rf"{a}\frac{{1}}{{{b}}}", [rf"\frac{{{a * b + 1}}}{{{b}}}"])),
            (1, lambda: (rf"\frac{{0{a}}}{{{b}}}", [f])),
            (1, lambda: (f"0{a}/{b}", [f])),
            (1, lambda: (rf"\frac{{{a}}}{{{b}}}", [rf"\frac{{-{a}}}{{-{b}}}"])),
            (1, lambda: (rf"\cfrac{{{a}}}{{{b}}}", [f])),
        ],
    )


def thousands(rng: random.Random) -> Pair:
    n = rng.randint(1000, 10**9)
    s, g = str(n), _group(n)
    return _pick(
        rng,
        [
            (3, lambda: (g, [s])),
            (2, lambda: (s, [g])),
            (2, lambda: (g.replace(",", " "), [s])),
            (2, lambda: (g.replace(",", r"\,"), [s])),
            (2, lambda: (g.replace(",", "{,}"), [s])),
            (1, lambda: (g.replace(",", r"\ "), [s])),
            (1, lambda: (g.replace(",", "."), [s])),
            (1, lambda: (g + ".5", [s + ".5"])),
            (1, lambda: (_group(n + 1), [s])),
            (1, lambda: (s[:-2] + "," + s[-2:], [s])),
            (1, lambda: ("0," + s[-3:], ["0." + s[-3:]])),
            (1, lambda: ("-" + g, ["-" + s])),
        ],
    )


def percent(rng: random.Random) -> Pair:
    p = rng.randint(1, 100)
    frac = Fraction(p, 100)
    return _pick(
        rng,
        [
            (2, lambda: (rf"{p}\%", [str(p)])),
            (2, lambda: (str(p), [rf"{p}\%"])),
            (2, lambda: (rf"{p}\%", [rf"{p}\%"])),
            (1, lambda: (f"{p}%", [rf"{p}\%"])),
            (1, lambda: (f"{p} percent", [str(p)])),
            (1, lambda: (rf"{p}\text{{\%}}", [str(p)])),
            (2, lambda: (rf"{p}\%", [_dec(frac, 2)])),
            (1, lambda: (_dec(frac, 2), [rf"{p}\%"])),
            (1, lambda: (rf"{p}\%", [rf"\frac{{{frac.numerator}}}{{{frac.denominator}}}"])),
            (1, lambda: (rf"{p + 1}\%", [rf"{p}\%"])),
        ],
    )


_UNITS = [r"\text{ cm}", r"\text{cm}", " cm", r"\text{ m}^2", r"\mbox{ m}", " meters", r"\text{ inches}", " kg"]


def units(rng: random.Random) -> Pair:
    n = rng.randint(1, 999)
    u = rng.choice(_UNITS)
    return _pick(
        rng,
        [
            (3, lambda: (f"{n}{u}", [str(n)])),
            (2, lambda: (str(n), [f"{n}{u}"])),
            (2, lambda: (f"{n + 1}{u}", [str(n)])),
            (2, lambda: (rf"\${n}", [str(n)])),
            (1, lambda: (f"{n} dollars", [str(n)])),
            (2, lambda: (rf"{n}^\circ", [str(n)])),
            (1, lambda: (rf"{n}^{{\circ}}", [str(n)])),
            (1, lambda: (f"{n} degrees", [str(n)])),
            (1, lambda: (rf"{n}^\circ", [rf"{n + 1}^\circ"])),
            (1, lambda: (rf"{n}\text{{ cm}}", [rf"{n}\text{{ m}}"])),
        ],
    )


def interval(rng: random.Random) -> Pair:
    a = rng.randint(-20, 20)
    b = a + rng.randint(1, 20)
    lo, hi = rng.choice("(["), rng.choice(")]")
    s = f"{lo}{a},{b}{hi}"
    other_lo = "[" if lo == "(" else "("
    return _pick(
        rng,
        [
            (2, lambda: (s, [s])),
            (2, lambda: (f"{lo}{a}, {b}{hi}", [s])),
            (2, lambda: (rf"\left{lo}{a},{b}\right{hi}", [s])),
            (2, lambda: (f"{other_lo}{a},{b}{hi}", [s])),
            (2, lambda: (f"{lo}{b},{a}{hi}", [s])),
            (1, lambda: (f"{lo}{a},{b + 1}{hi}", [s])),
            (1, lambda: (rf"(-\infty,{b}{hi}", [rf"(-\infty, {b}{hi}"])),
            (1, lambda: (rf"(-\infty,{a})\cup({b},\infty)", [rf"(-\infty,{a}) \cup ({b},\infty)"])),
            (1, lambda: (f"{a}<x<{b}", [f"({a},{b})"])),
            (1, lambda: (f"({a},{b})", [f"{a}<x<{b}"])),
            (1, lambda: (rf"[{a},\infty)", [rf"x \geq {a}"])),
        ],
    )


def set_tuple(rng: random.Random) -> Pair:
    xs = sorted(rng.sample(range(-10, 30), rng.randint(2, 4)))
    joined = ",".join(map(str, xs))
    rev = ",".join(map(str, reversed(xs)))
    return _pick(
        rng,
        [
            (2, lambda: (rf"\{{{rev}\}}", [rf"\{{{joined}\}}"])),
            (2, lambda: (joined, [rf"\{{{joined}\}}"])),
            (2, lambda: (rev, [joined])),
            (2, lambda: (f"({joined})", [f"({rev})"])),
            (2, lambda: (f"({joined})", [f"({joined})"])),
            (1, lambda: (", ".join(map(str, xs)), [joined])),
            (2, lambda: (rf"\{{{','.join(map(str, xs[:-1]))}\}}", [rf"\{{{joined}\}}"])),
            (1, lambda: (" and ".join(map(str, xs)), [joined])),
            (1, lambda: (rf"\{{{joined}\}}", [f"({joined})"])),
            (1, lambda: (f"{xs[0]}, {xs[1] + 1}", [f"{xs[0]},{xs[1]}"])),
        ],
    )


_SPACES = [r"\,", r"\!", r"\ ", "~", r"\;", r"\quad", "  ", "\n"]


def latex_spacing(rng: random.Random) -> Pair:
    a, b = rng.randint(1, 30), rng.randint(2, 30)
    sp = rng.choice(_SPACES)
    f = rf"\frac{{{a}}}{{{b}}}"
    return _pick(
        rng,
        [
            (2, lambda: (rf"\frac {{{a}}} {{{b}}}", [f])),
            (2, lambda: (rf"\frac{{{a}}}{sp}{{{b}}}", [f])),
            (2, lambda: (rf"{sp}{a}{sp}", [str(a)])),
            (2, lambda: (rf"\displaystyle {f}", [f])),
            (2, lambda: (rf"\left( {a}, {b} \right)", [f"({a},{b})"])),
            (1, lambda: (rf"{a}{sp}+{sp}{b}", [str(a + b)])),
            (1, lambda: (rf"\sqrt{{{a}}}{sp}", [rf"\sqrt{{{a}}}"])),
            (1, lambda: (rf"{a}{sp}{b}", [f"{a}{b}"])),
            (1, lambda: (rf"\frac{{{a}}}{{{b}}}{sp}", [rf"\frac{{{a + 1}}}{{{b}}}"])),
            (1, lambda: (rf"\mathrm{{{a}}}", [str(a)])),
        ],
    )


def symbolic(rng: random.Random) -> Pair:
    n = rng.choice([2, 3, 5, 6, 7, 10, 11])
    k = rng.randint(2, 5)
    return _pick(
        rng,
        [
            (2, lambda: (f"{n}^{{1/2}}", [rf"\sqrt{{{n}}}"])),
            (2, lambda: (rf"\sqrt{{{n * k * k}}}", [rf"{k}\sqrt{{{n}}}"])),
            (2, lambda: (rf"{k}\sqrt{{{n}}}", [rf"{k + 1}\sqrt{{{n}}}"])),
            (1, lambda: (rf"\sqrt{{{n}}}", [rf"\sqrt{{{n + 1}}}"])),
            (2, lambda: (rf"{k}\pi", [rf"{k} \pi"])),
            (1, lambda: (r"\pi", ["3.14159"])),
            (1, lambda: (rf"\frac{{\pi}}{{{k}}}", [rf"\frac{{1}}{{{k}}}\pi"])),
            (1, lambda: (rf"{k}\pi", [rf"{k + 1}\pi"])),
            (1, lambda: (rf"\frac{{\sqrt{{{n}}}}}{{{k}}}", [rf"\frac{{1}}{{{k}}}\sqrt{{{n}}}"])),
            (1, lambda: (f"x^2+{2 * k}x+{k * k}", [f"(x+{k})^2"])),
            (1, lambda: (f"x^2+{2 * k}x+{k * k + 1}", [f"(x+{k})^2"])),
            (1, lambda: (f"e^{{{k}}}", [rf"\exp({k})"])),
            (1, lambda: (rf"\log_{{2}} {2**k}", [str(k)])),
            (1, lambda: (r"\sin(\frac{\pi}{6})", [r"\frac{1}{2}"])),
            (1, lambda: (f"{k}+{n}i", [f"{n}i+{k}"])),
            (1, lambda: (rf"\binom{{{n + k}}}{{{k}}}", [str(_binom(n + k, k))])),
            (1, lambda: (f"{k}!", [str(_fact(k))])),
        ],
    )


def _binom(n: int, k: int) -> int:
    out = 1
    for i in range(k):
        out = out * (n - i) // (i + 1)
    return out


def _fact(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out


def _value(rng: random.Random) -> str:
    """A plain value in one of the forms latex2sympy reads as a number (or an irrational multiple)."""
    f = _frac(rng)
    k, m = rng.randint(1, 9), rng.choice([2, 3, 4, 5, 8, 9, 12])
    return rng.choice(
        [
            str(rng.randint(-50, 500)),
            _dec(f, rng.randint(1, 7)),
            rf"\frac{{{f.numerator}}}{{{f.denominator}}}",
            rf"{rng.randint(0, 360)}^\circ",
            rf"{rng.randint(0, 360)}^{{\circ}}",
            rf"{k}\sqrt{{{m}}}",
            rf"\sqrt{{{m}}}",
            rf"{k}\pi",
            f"{rng.randint(1000, 99999):,}",
        ]
    )


def equation_values(rng: random.Random) -> Pair:
    """``v = <value>`` against plain values and the other way round; letters sympy treats specially included."""
    v = rng.choice("xyzknabtXY" * 3 + "eiEI")
    a, b = _value(rng), _value(rng)
    return _pick(
        rng,
        [
            (3, lambda: (f"{v} = {a}", [a])),
            (2, lambda: (f"{v}={a}", [b])),
            (2, lambda: (a, [f"{v} = {a}"])),
            (2, lambda: (b, [f"{v}={a}"])),
            (1, lambda: (f"{v} = {a}", [f"{v} = {b}"])),
            (1, lambda: (f"{v} = {a} = {a}", [a])),
            (1, lambda: (f"{v} \\approx {a}", [a])),
        ],
    )


def irrational(rng: random.Random) -> Pair:
    """Multiples of square roots and of pi against rationals, decimal approximations and each other."""
    k, m = rng.randint(0, 9), rng.choice([2, 3, 5, 6, 7, 8, 9, 12, 16, 18, 25, 50])
    root = rf"{k if k != 1 else ''}\sqrt{{{m}}}"
    pi = rf"{k if k != 1 else ''}\pi"
    x = rng.choice([root, pi, "-" + root])
    value = (k or 1) * (m**0.5 if "sqrt" in x else 3.141592653589793) * (-1 if x.startswith("-") else 1)
    return _pick(
        rng,
        [
            (3, lambda: (x, [str(rng.randint(-20, 60))])),
            (2, lambda: (str(round(value)), [x])),
            (2, lambda: (x, [rf"\frac{{{rng.randint(1, 50)}}}{{{rng.randint(2, 9)}}}"])),
            (2, lambda: (_dec(Fraction(value), rng.randint(2, 8)), [x])),
            (1, lambda: (x, [_dec(Fraction(value), 6)])),
            (1, lambda: (x, [x])),
            (1, lambda: (x, [rng.choice([root, pi])])),
            (1, lambda: (rf"\sqrt{{{rng.randint(1, 12) ** 2}}}", [str(rng.randint(1, 12))])),
        ],
    )


def equation(rng: random.Random) -> Pair:
    n = rng.randint(-20, 50)
    v = rng.choice("xyzk")
    return _pick(
        rng,
        [
            (3, lambda: (f"{v}={n}", [str(n)])),
            (2, lambda: (str(n), [f"{v}={n}"])),
            (2, lambda: (f"{v} = {n}", [f"{v}={n}"])),
            (2, lambda: (f"{v}={n}", [f"w={n}"])),
            (2, lambda: (f"{v}={n + 1}", [str(n)])),
            (1, lambda: (f"y={n}x+1", [f"{n}x+1"])),
            (1, lambda: (f"a={n}, b={n + 1}", [f"({n},{n + 1})"])),
            (1, lambda: (f"{v}={n} or {v}={n + 2}", [f"{n},{n + 2}"])),
        ],
    )


def text(rng: random.Random) -> Pair:
    day = rng.choice(["Monday", "Tuesday", "Friday", "Sunday"])
    letter = rng.choice("ABCDE")
    word = rng.choice(["yes", "no", "even", "odd", "none"])
    return _pick(
        rng,
        [
            (2, lambda: (rf"\text{{{day}}}", [day])),
            (2, lambda: (day, [rf"\text{{{day}}}"])),
            (2, lambda: (rf"\text{{({letter})}}", [letter])),
            (2, lambda: (f"({letter})", [letter])),
            (2, lambda: (letter, [rf"\text{{{letter}}}"])),
            (1, lambda: (letter.lower(), [letter])),
            (2, lambda: (chr((ord(letter) - 64) % 5 + 65), [letter])),  # the next letter
            (1, lambda: (rf"\textbf{{{word}}}", [word])),
            (1, lambda: (word, [word])),
            (1, lambda: (word.upper(), [word])),
        ],
    )


def scientific(rng: random.Random) -> Pair:
    m = rng.randint(1, 9)
    e = rng.randint(2, 9)
    full = str(m * 10**e)
    return _pick(
        rng,
        [
            (2, lambda: (f"{m}e{e}", [full])),
            (2, lambda: (rf"{m}\times10^{{{e}}}", [full])),
            (2, lambda: (rf"{m} \cdot 10^{e}", [full])),
            (2, lambda: (f"10^{{{e}}}", [str(10**e)])),
            (1, lambda: (rf"{m}.5\times10^{{{e}}}", [str(m * 10**e + 5 * 10 ** (e - 1))])),
            (1, lambda: (rf"{m}\times10^{{{e + 1}}}", [full])),
        ],
    )


_MALFORMED = [
    r"\frac{",
    "}",
    "{{",
    r"\boxed{",
    "5..",
    "1/0",
    "NaN",
    "nan",
    "undefined",
    r"\infty",
    "infinity",
    "\\",
    "$",
    "$$",
    r"\left(",
    "()",
    "[]",
    r"\{\}",
    "\u00bd",
    "\uff15",
    "\u221e",
    "?",
    "...",
    r"\text{}",
    r"\,",
    "answer: 5",
    "final answer is 5",
    "The answer is 5",
    "5 (final answer)",
    "$5$",
    "$$5$$",
    r"\(5\)",
    r"\[5\]",
    r"\boxed{5}",
    r"\fbox{5}",
    "5}{",
    "x^{",
    "1,,2",
    "--",
    "+",
    ".",
    "0x1F",
    "1_000",
    "\u2212\u2212",
]


def malformed(rng: random.Random) -> Pair:
    bad = rng.choice(_MALFORMED)
    n = rng.randint(0, 9)
    long = "+".join(str(rng.randint(10**6, 10**9)) for _ in range(rng.randint(8, 24)))  # long, still parseable
    return _pick(
        rng,
        [
            (6, lambda: (bad, [str(n)])),
            (3, lambda: (str(n), [bad])),
            (2, lambda: (bad, [bad])),
            (1, lambda: (long, [str(sum(int(t) for t in long.split("+")))])),
            (1, lambda: (long, [long])),
            (1, lambda: (bad.replace("5", str(n)), [str(n)])),
        ],
    )


def multi_gold(rng: random.Random) -> Pair:
    f = _frac(rng)
    fs = rf"\frac{{{f.numerator}}}{{{f.denominator}}}"
    n = rng.randint(1, 500)
    return _pick(
        rng,
        [
            (2, lambda: (_dec(f, 4), [fs, _dec(f, 4)])),
            (2, lambda: (_dec(f, 3), [fs, _dec(f, 2)])),
            (2, lambda: (str(n), [str(n + 1), str(n)])),
            (2, lambda: (str(n + 2), [str(n), str(n + 1)])),
            (1, lambda: (rf"{n}\%", [str(n), rf"{n}\%"])),
            (1, lambda: (f"x={n}", [str(n), f"x={n}"])),
            (1, lambda: (fs, [_dec(f, 1), _dec(f, 2), fs])),
        ],
    )


def exact_dup(rng: random.Random) -> Pair:
    gen = rng.choice([fraction_forms, interval, set_tuple, symbolic, text, units, percent, latex_spacing, equation])
    answer, golds = gen(rng)
    return golds[0], [golds[0]]


PATHOLOGICAL: list[Pair] = [
    ("9^{9^{9^{9}}}", ["5"]),
    ("10^{10^{10^{10}}}", ["7"]),
]

#: (name, generator, pairs): about 7,900 in all
CATEGORIES: list[tuple[str, Callable[[random.Random], Pair], int]] = [
    ("integer", integer, 1000),
    ("integer_huge", integer_huge, 150),
    ("negative", negative, 300),
    ("decimal", decimal, 550),
    ("number_edges", number_edges, 600),
    ("fraction_decimal", fraction_decimal, 600),
    ("fraction_forms", fraction_forms, 450),
    ("thousands", thousands, 300),
    ("percent", percent, 250),
    ("units", units, 300),
    ("interval", interval, 300),
    ("set_tuple", set_tuple, 300),
    ("latex_spacing", latex_spacing, 300),
    ("symbolic", symbolic, 350),
    ("equation", equation, 200),
    ("equation_values", equation_values, 400),
    ("irrational", irrational, 400),
    ("text", text, 200),
    ("scientific", scientific, 150),
    ("malformed", malformed, 300),
    ("multi_gold", multi_gold, 200),
    ("exact_dup", exact_dup, 300),
]


def generate_pairs() -> list[dict]:
    """Every (category, answer, golds) of the corpus, in a fixed order (no verdicts)."""
    out = []
    for name, gen, count in CATEGORIES:
        rng = random.Random(zlib.crc32(name.encode()))
        for _ in range(count):
            answer, golds = gen(rng)
            out.append({"category": name, "answer": answer, "golds": golds})
    out += [{"category": "pathological", "answer": a, "golds": g} for a, g in PATHOLOGICAL]
    return out


# ---------------------------------------------------------------------------------------------------- verdicts
class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout


def reference_verdict(answer: str, golds: list[str], timeout_s: float = SOFT_TIMEOUT_S) -> bool | str:
    """math_verify's verdict as the verifier worker computes it: True/False, "timeout" or "error"."""
    from grporoc_plugin.reward.verify import math_verify_equivalent

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return bool(math_verify_equivalent(answer, golds))
    except _Timeout:
        return "timeout"
    except Exception:  # noqa: BLE001 - the worker reports these as status "error"
        return "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_corpus(path: Path = CORPUS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="recompute verdicts and compare with the stored file")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, for grporoc_plugin
    pairs = generate_pairs()
    t0 = time.perf_counter()
    for i, pair in enumerate(pairs):
        pair["mv"] = reference_verdict(pair["answer"], pair["golds"])
        if i % 500 == 0:
            print(f"  {i}/{len(pairs)} {time.perf_counter() - t0:.0f} s", flush=True)
    elapsed = time.perf_counter() - t0
    verdicts = Counter(str(p["mv"]) for p in pairs)
    print(f"{len(pairs)} pairs, math_verify {elapsed:.1f} s, verdicts {dict(verdicts)}")
    if args.check:
        stored = load_corpus()
        diff = [(a, b) for a, b in zip(pairs, stored, strict=True) if a != b]
        print(f"{len(diff)} pairs differ from {CORPUS.name}")
        for a, b in diff[:10]:
            print("  now", a, "\n  was", b)
        return 1 if diff else 0
    with open(CORPUS, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(f"wrote {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
