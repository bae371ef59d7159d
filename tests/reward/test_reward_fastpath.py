"""The verifier's fast path gives math_verify's verdicts, pair by pair, on the answer-pair corpus; the verdict cache.

The corpus (``data/answer_pairs.jsonl``, >= 5,000 pairs) stores math_verify's verdict on each pair, computed by
``data/make_answer_pairs.py``. Here: the stored pairs are that script's output, every fast-path decision equals the
stored verdict, a random sample of stored verdicts is recomputed live (a different sample each run; the seed is in
the failure message, ``GRPOROC_CORPUS_SEED`` replays it), and the full verifier (fast path + workers) agrees on a
sample too.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))

from make_answer_pairs import generate_pairs, load_corpus, reference_verdict  # noqa: E402

from grporoc_plugin.reward import fastpath  # noqa: E402
from grporoc_plugin.reward.fastpath import VerdictCache, fast_rules_supported, fast_verdict  # noqa: E402
from grporoc_plugin.reward.verify import VerifierPool  # noqa: E402

CORPUS = load_corpus()
DECIDABLE = [p for p in CORPUS if p["mv"] in (True, False)]


def _seed() -> int:
    return int(os.environ.get("GRPOROC_CORPUS_SEED", time.time_ns() % 2**31))


def test_corpus_is_the_output_of_its_script():
    stored = [(p["category"], p["answer"], p["golds"]) for p in CORPUS]
    assert stored == [(p["category"], p["answer"], p["golds"]) for p in generate_pairs()]
    assert len(CORPUS) >= 5000
    required = {"fraction_decimal", "fraction_forms", "units", "interval", "set_tuple", "latex_spacing", "thousands"}
    assert required | {"negative", "percent", "malformed", "number_edges"} <= {p["category"] for p in CORPUS}
    verdicts = Counter(str(p["mv"]) for p in CORPUS)
    assert verdicts["True"] > 1000 and verdicts["False"] > 1000  # both verdicts well represented


def test_the_rules_were_checked_against_these_versions():
    supported, why = fast_rules_supported()
    assert supported, f"fast-path rules off: {why}; check them on the corpus, then update fastpath.CHECKED_VERSIONS"


def test_fast_path_equals_math_verify_on_every_pair():
    mismatches, decided = [], Counter()
    for pair in CORPUS:
        verdict = fast_verdict(pair["answer"], pair["golds"])
        if verdict is None:
            continue
        decided[pair["category"]] += 1
        if verdict != pair["mv"]:  # also catches a verdict where math_verify timed out or raised
            mismatches.append((verdict, pair))
    assert not mismatches, f"{len(mismatches)} pairs differ, e.g. {mismatches[:5]}"
    # the fast path must actually decide: integers nearly always, most numbers, identical strings always
    total = Counter(p["category"] for p in CORPUS)
    assert decided["integer"] >= 0.9 * total["integer"]
    assert decided["fraction_decimal"] >= 0.8 * total["fraction_decimal"]
    assert decided["exact_dup"] == total["exact_dup"]
    assert sum(decided.values()) >= 0.5 * len(CORPUS)


def test_each_subset_of_the_rules_equals_math_verify():
    """What runs on the event loop (no normaliser) and rule 1 alone decide less, never differently."""
    for pair in CORPUS:
        verdict = fast_verdict(pair["answer"], pair["golds"], normalize=False)
        assert verdict is None or verdict == pair["mv"], pair
    # and with the number rules off, only the version-independent normalised exact match decides, never wrongly
    for pair in CORPUS:
        verdict = fast_verdict(pair["answer"], pair["golds"], number_rules=False)
        assert verdict in (None, True) and (verdict is None or pair["mv"] is True), pair


def test_stored_verdicts_hold_live():
    seed = _seed()
    sample = random.Random(seed).sample(DECIDABLE, 150)
    wrong = [p for p in sample if reference_verdict(p["answer"], p["golds"], timeout_s=60.0) != p["mv"]]
    assert not wrong, f"GRPOROC_CORPUS_SEED={seed}: math_verify now disagrees with the stored corpus on {wrong[:5]}"


def test_verifier_pool_gives_the_stored_verdicts():
    """Fast path, cache and math_verify workers together, on a sample that includes repeats."""
    seed = _seed()
    rng = random.Random(seed)
    sample = rng.sample(DECIDABLE, 200)
    sample += rng.sample(sample, 50)  # repeats: served by the cache
    pool = VerifierPool(num_workers=1, timeout_s=60.0)  # a slow shared machine must not turn a verdict into a timeout
    try:
        pool.warm_up()
        outcomes = [pool.verify(p["answer"], p["golds"]) for p in sample]
    finally:
        pool.close()
    wrong = [(o, p) for o, p in zip(outcomes, sample, strict=True) if o.correct != p["mv"]]
    assert not wrong, f"GRPOROC_CORPUS_SEED={seed}: {wrong[:5]}"
    statuses = Counter(o.status for o in outcomes)
    assert statuses["cached"] >= 50 and statuses["fast"] > 0 and statuses["verified"] > 0, statuses
    stats = pool.stats
    assert stats.calls == len(sample) == stats.no_answer + stats.cache_hits + stats.fast_path + stats.worker_calls
    assert stats.rejected == 0 and stats.no_answer == statuses["no_answer"]  # a few corpus answers are blank
    assert stats.without_math_verify == statuses["cached"] + statuses["fast"]


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("42", "42", True),
        ("0042", "42", True),
        ("+42", "42", True),
        ("42.0", "42", True),  # Float vs Integer: exact equality
        ("42.0000001", "42", False),  # ... even when both round to 42.000000
        ("-0", "0", True),
        ("1,000", "1000", True),  # math_verify reads thousands separators ...
        ("1,000.5", "1000.5", None),  # (not a pattern the rules know)
        ("1 000", "1000", None),  # ... "1 000" is the product 1*0 to it (False; the old string path said True)
        ("0.5", "\\frac{1}{2}", True),
        ("0.333333", "\\frac{1}{3}", True),  # same rounding, same magnitude
        ("0.33333", "\\frac{1}{3}", False),
        ("0.1234565", "0.123456", None),  # a rounding tie at the 6th decimal
        ("0.9999996", "1.0000001", None),  # same rounding, magnitudes differ across a power of ten
        ("0.0004", "0.0005", None),  # below 1e-3: rounded Floats of one or two digits
        ("1234567.5", "1234567.6", None),  # 1e6 and above
        ("\\frac{1}{0}", "1", None),  # zoo
        ("5.", "5", None),  # math_verify cannot parse "5."; the old string path said True
        ("x=5", "5", True),  # verify compares the right-hand side when the gold is not an equation ...
        ("5", "x = 5", True),  # ... and unwraps an assignment gold
        ("x = 6", "5", False),
        ("e=5", "5", None),  # e is Euler's number to latex2sympy: left to math_verify
        ("x = 1,000", "1000", None),  # on a right-hand side latex2sympy reads 1,000 as a set
        ("90^\\circ", "90", True),
        ("2\\sqrt{3}", "5", False),  # irrational vs rational (math_verify: ~0.2 s of simplify)
        ("\\sqrt{16}", "4", None),  # a square: rational after all
        ("3\\pi", "9.424778", None),  # irrational vs Float: rounding decides
        ("\\text{answer: }5", "5", None),  # "answer" could let a "final answer" pattern win
    ],
)
def test_rule_edges(answer, gold, expected):
    assert fast_verdict(answer, [gold]) is expected


def test_several_ground_truths_any_and_all():
    assert fast_verdict("7", ["6", "7"]) is True
    assert fast_verdict("8", ["6", "7"]) is False
    assert fast_verdict("8", ["6", "\\{8\\}"]) is None  # one gold undecided and none true: not sure


def test_version_gate_turns_the_rules_off(monkeypatch):
    monkeypatch.setattr(fastpath, "CHECKED_VERSIONS", (("sympy", "0.1."),))
    fastpath.fast_rules_supported.cache_clear()
    try:
        assert fast_rules_supported() == (False, f"sympy {_version('sympy')} (rules checked against 0.1.x)")
        pool = VerifierPool(num_workers=1, timeout_s=30.0)
        try:
            assert pool.rules is False and pool.fast_path is True
            assert [pool.verify("42", "42").status for _ in range(2)] == ["verified", "cached"]  # the cache stays
        finally:
            pool.close()
    finally:
        fastpath.fast_rules_supported.cache_clear()


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def test_verdict_cache_lru_and_disabled():
    cache = VerdictCache(2)
    cache.put(("a", ("1",)), True)
    cache.put(("b", ("1",)), False)
    assert cache.get(("a", ("1",))) is True  # "a" becomes most recent
    cache.put(("c", ("1",)), True)  # evicts "b"
    assert cache.get(("b", ("1",))) is None and cache.get(("a", ("1",))) is True and len(cache) == 2
    off = VerdictCache(0)
    off.put(("a", ("1",)), True)
    assert off.get(("a", ("1",))) is None and len(off) == 0


def test_cache_keeps_verdicts_not_failures():
    pool = VerifierPool(num_workers=1, timeout_s=30.0)
    try:
        pool.warm_up()
        first, again = pool.verify("\\sqrt{8}", "2\\sqrt{2}"), pool.verify("\\sqrt{8}", "2\\sqrt{2}")
        assert (first.status, again.status) == ("verified", "cached") and first.correct and again.correct
        assert pool.verify("\\sqrt{8}", ["2\\sqrt{2}", "3"]).status == "verified"  # the key holds every gold
        pool.timeout_s, pool.soft_timeout_s = 1.0, 0.9
        slow = [pool.verify("9^{9^{9^{9}}}", "5") for _ in range(2)]
        assert [o.status for o in slow] == ["timeout", "timeout"]  # a timeout is retried, never cached
        assert pool.stats.timeouts == 2 and pool.stats.cache_hits == 1
    finally:
        pool.close()


def test_fast_path_off_sends_everything_to_math_verify():
    pool = VerifierPool(num_workers=1, timeout_s=5.0, fast_path=False)
    try:
        outcomes = [pool.verify("42", "42") for _ in range(3)]
        assert [o.status for o in outcomes] == ["verified"] * 3 and all(o.correct for o in outcomes)
        assert pool.stats.worker_calls == 3 and pool.stats.without_math_verify == 0
    finally:
        pool.close()
