"""Claims judged by stated rules (docs/claims.md): each rule holds, fails and is inconclusive on
constructed inputs; the statistics helpers against hand-computed values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from intriguing.analysis import stats
from intriguing.errors import InvalidInputError
from intriguing.experiments import claims
from intriguing.experiments.reproduce import verdict_stability


# ----------------------------------------------------------------------------- stats oracles
def test_clopper_pearson_matches_the_closed_form_at_the_edges() -> None:
    # k = n: lower bound (alpha/2)^(1/n); k = 0: upper bound 1 - (alpha/2)^(1/n)
    assert stats.clopper_pearson(10, 10)[0] == pytest.approx(0.025 ** (1 / 10))
    assert stats.clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert stats.clopper_pearson(0, 0) == (0.0, 1.0)
    lo, hi = stats.wilson(5, 10)
    assert lo < 0.5 < hi and lo == pytest.approx(1 - hi)
    with pytest.raises(InvalidInputError):
        stats.clopper_pearson(3, 2)


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs() -> None:
    assert stats.mcnemar_p(5, 0) == pytest.approx(0.5**5)
    assert stats.mcnemar_p(0, 5) == pytest.approx(1.0)
    assert stats.mcnemar_p(0, 5, "less") == pytest.approx(0.5**5)
    assert stats.mcnemar_p(0, 0) == 1.0
    # 3 of 4 discordant: P(X >= 3 | n=4, 1/2) = 5/16
    assert stats.mcnemar_p(3, 1) == pytest.approx(5 / 16)


def test_paired_counts_from_vectors_and_consistency() -> None:
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0], dtype=bool)
    t = stats.paired_counts(a, b)
    assert t.to_dict() == {"n": 5, "a": 3, "b": 2, "a_only": 2, "b_only": 1}
    assert stats.Paired.from_dict(t.to_dict()) == t
    assert t.diff == pytest.approx(0.2)
    lo, hi = t.diff_ci()
    assert lo < 0.2 < hi
    with pytest.raises(InvalidInputError):
        stats.Paired(n=5, a=3, b=2, a_only=0, b_only=1)  # both-positive counts disagree
    with pytest.raises(InvalidInputError):
        stats.paired_counts([True], [True, False])


def test_fisher_and_mean_intervals() -> None:
    assert stats.fisher_p(10, 10, 0, 10) < 1e-4
    assert stats.fisher_p(0, 10, 10, 10) == pytest.approx(1.0)
    lo, hi = stats.mean_ci(1.0, 0.0, 5)
    assert lo == hi == 1.0
    assert stats.mean_ci(1.0, 1.0, 1) == (-np.inf, np.inf)
    values = np.random.default_rng(0).normal(2.0, 1.0, 200)
    blo, bhi = stats.bootstrap_mean_ci(values)
    tlo, thi = stats.mean_ci(float(values.mean()), float(values.std(ddof=1)), 200)
    assert blo < values.mean() < bhi
    assert blo == pytest.approx(tlo, abs=0.05) and bhi == pytest.approx(thi, abs=0.05)


def test_verdict_rules() -> None:
    assert stats.share_verdict(6, 6)[0] == stats.HOLDS  # exact lower bound 0.54
    assert stats.share_verdict(5, 6)[0] == stats.INCONCLUSIVE
    assert stats.share_verdict(0, 6)[0] == stats.FAILS  # exact upper bound 0.46
    assert stats.share_verdict(0, 0)[0] == stats.INCONCLUSIVE
    assert stats.interval_verdict(0.1, 0.2, 0.25) == stats.HOLDS
    assert stats.interval_verdict(0.3, 0.4, 0.25) == stats.FAILS
    assert stats.interval_verdict(0.2, 0.3, 0.25) == stats.INCONCLUSIVE
    assert stats.interval_verdict(0.96, 1.0, 0.95, below=False) == stats.HOLDS
    assert stats.combine([stats.HOLDS, stats.INCONCLUSIVE]) == stats.INCONCLUSIVE
    assert stats.combine([stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE]) == stats.FAILS
    assert stats.combine([stats.HOLDS, stats.HOLDS]) == stats.HOLDS


# ----------------------------------------------------------------------------- constructed runs
def _evidence(k: int, n: int, mean: float = 0.03, sd: float = 0.01) -> dict[str, Any]:
    return {"n": n, "distortion": {"n": k, "mean": mean, "sd": sd}, "box": {"min": 0.0, "max": 1.0}}


ROWS = [{"model": "a", "paper": {"distortion": 0.06}}, {"model": "b", "paper": {}}]
REFERENCE = {"mean": 0.4, "sd": 0.05, "n": 10000}


@pytest.mark.parametrize(
    ("k", "n", "verdict"),
    [(200, 200, "holds"), (100, 200, "fails"), (10, 10, "inconclusive")],
)
def test_every_model_fooled(k: int, n: int, verdict: str) -> None:
    paired = {"a": _evidence(200, 200), "b": _evidence(k, n)}
    c = claims.every_model_fooled(ROWS, paired, "t1", "Table 1")
    assert c["verdict"] == verdict
    assert c["n"] == 200 + n and c["ci"] is not None and c["p_value"] is None
    assert c["parts"][0]["verdict"] == "holds"


@pytest.mark.parametrize(
    ("mean", "sd", "n", "verdict"),
    [(0.04, 0.01, 1000, "holds"), (0.2, 0.05, 1000, "fails"), (0.09, 0.1, 10, "inconclusive")],
)
def test_distortion_tiny(mean: float, sd: float, n: int, verdict: str) -> None:
    paired = {"a": _evidence(1000, 1000, 0.03, 0.01), "b": _evidence(n, n, mean, sd)}
    c = claims.distortion_tiny(ROWS, paired, REFERENCE, "t1-tiny", "Table 1")
    assert c["verdict"] == verdict
    part = {p["model"]: p for p in c["parts"]}
    assert part["a"]["ratio"] == pytest.approx(0.03 / 0.4)
    assert part["a"]["paper_ratio"] == pytest.approx(0.06 / 0.4)
    assert "0.400" in c["rule"] and "10000 pairs" in c["rule"]


def _noise_cells(a_only: int, b_only: int, models: list[str]) -> dict[str, Any]:
    return {
        m: {"n": 100, "a": 10 + a_only, "b": 10 + b_only, "a_only": a_only, "b_only": b_only}
        for m in models
    }


def _transfer(per_source: dict[str, tuple[int, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    models = list(per_source)
    paired = {
        s: _evidence(100, 100)
        | {
            "noise": [
                {"stddev": 0.1, "cells": _noise_cells(ao, bo, models)},
                {"stddev": 0.3, "cells": _noise_cells(0, 40, models)},  # farther: never used
            ],
            "amplified": {"stddev": 0.1, "cells": _noise_cells(ao, bo, models)},
        }
        for s, (ao, bo) in per_source.items()
    }
    return {"columns": models}, paired


@pytest.mark.parametrize(
    ("discordant", "verdict"),
    [
        ({"a": (30, 0), "b": (30, 0), "c": (30, 0)}, "holds"),  # 6 of 6 significant
        ({"a": (0, 30), "b": (2, 2), "c": (0, 0)}, "fails"),  # 0 of 6
        ({"a": (30, 0), "b": (30, 0), "c": (3, 3)}, "inconclusive"),  # 4 of 6
    ],
)
def test_transfer_and_amplified_against_noise_on_the_same_images(
    discordant: dict[str, tuple[int, int]], verdict: str
) -> None:
    table, paired = _transfer(discordant)
    c = claims.transfer_beats_noise(table, paired, "t2", "Table 2")
    assert c["verdict"] == verdict
    assert c["n"] == 6 and {p["stddev"] for p in c["parts"]} == {0.1}  # nearest to 0.03
    assert all(p["source"] != p["target"] for p in c["parts"])
    amp = claims.amplified_beats_noise(table, paired)
    assert amp["verdict"] == verdict and amp["id"] == "table4-amplified"
    lo, hi = c["ci"]
    assert 0.0 <= lo <= hi <= 1.0


def _figure7(adv_correct: int, noise_correct: int, n: int) -> dict[str, Any]:
    # noise-correct items are the first noise_correct, adversarial-correct the last adv_correct
    noise = np.arange(n) < noise_correct
    adv = np.arange(n) >= n - adv_correct
    counts = stats.paired_counts(noise, adv).to_dict()
    mode = {"paired": counts, "achieved_distortion": 1.0, "test": {"n": 50, "correct": 25}}
    return _evidence(n - adv_correct, n) | {
        "figure7": {"stddev": 1.0, "n": n, "unclipped": mode, "clipped": mode}
    }


@pytest.mark.parametrize(
    ("adv", "noise", "n", "verdict"),
    [(0, 100, 200, "holds"), (100, 20, 200, "fails"), (0, 2, 10, "inconclusive")],
)
def test_figure7_judges_both_parts(adv: int, noise: int, n: int, verdict: str) -> None:
    paired = {"m": _figure7(adv, noise, n)}
    c = claims.figure7_noise_vs_adversarial(["m"], paired)
    assert c["verdict"] == verdict
    parts = {p["part"] for p in c["parts"]}
    assert parts == {
        "adversarial accuracy",
        "noise accuracy (unclipped)",
        "noise accuracy (clipped)",
    }
    assert "stddev 1" in c["claim"] and c["p_value"] is not None


def test_figure7_fails_when_only_the_adversarial_part_fails() -> None:
    # noise leaves far more accuracy, but the adversarial examples are not at 0%
    c = claims.figure7_noise_vs_adversarial(["m"], {"m": _figure7(40, 190, 200)})
    verdicts = {p["part"]: p["verdict"] for p in c["parts"]}
    assert verdicts["adversarial accuracy"] == "fails"
    assert verdicts["noise accuracy (clipped)"] == "holds"
    assert c["verdict"] == "fails"


def _units(p: float, r: float, model: str = "m") -> dict[str, Any]:
    return {
        "model": model,
        "layer": "act2",
        "metrics": ["purity"],
        "families": {"natural": {"n_dead": 3}},
        "comparisons": [
            {
                "a": "natural",
                "b": "random",
                "metric": "purity",
                "mean_a": 0.6,
                "mean_b": 0.5,
                "n_a": 22,
                "n_b": 25,
                "p_mannwhitney": p,
                "rank_biserial": r,
            }
        ],
    }


@pytest.mark.parametrize(
    ("p", "r", "verdict", "direction"),
    [
        (0.5, 0.1, "holds", "equally"),
        (0.002, -0.5, "holds", "less"),
        (0.01, 0.4, "fails", "more"),
        (0.2, 0.35, "inconclusive", "equally"),
    ],
)
def test_units_verdict_says_which_way(p: float, r: float, verdict: str, direction: str) -> None:
    c = claims.units_not_privileged([_units(p, r)])
    assert c["verdict"] == verdict
    assert c["parts"][0]["direction"] == direction
    assert claims.DIRECTION_TEXT[direction] in c["statistic"] and "3 dead" in c["evidence"]
    assert c["p_value"] == p


@pytest.mark.parametrize(
    ("n_a", "n_b", "p", "r"),
    [(2, 2, 1.0, 0.0), (3, 3, 0.1, -1.0), (3, 3, 1.0, 0.0), (22, 25, float("nan"), 0.1)],
)
def test_units_verdict_is_inconclusive_when_the_test_cannot_fail(
    n_a: int, n_b: int, p: float, r: float
) -> None:
    """With 3 vs 3 directions no data gives a two-sided p below 0.1: 'holds' would be a foregone
    conclusion. A NaN p is no evidence either way."""
    run = _units(p, r)
    run["comparisons"][0].update(n_a=n_a, n_b=n_b)
    c = claims.units_not_privileged([run])
    assert c["verdict"] == "inconclusive" and c["parts"][0]["direction"] == "untested"
    assert "too few to be compared with" in c["statistic"]


def test_mannwhitney_smallest_p_is_the_exact_tests_at_complete_separation() -> None:
    from scipy.stats import mannwhitneyu

    for n_a, n_b in [(1, 1), (2, 3), (3, 3), (4, 4), (5, 3)]:
        exact = mannwhitneyu(range(n_a), range(100, 100 + n_b), method="exact").pvalue
        assert stats.mannwhitney_smallest_p(n_a, n_b) == pytest.approx(exact)
    assert stats.mannwhitney_smallest_p(0, 5) == 1.0


@pytest.mark.parametrize("k", [1, 2])
def test_distortion_tiny_with_one_success_has_no_interval_and_stores(k: int) -> None:
    """One success has no standard deviation: its interval was [0, inf], which strict JSON
    cannot store (the claims step failed at the end of the run)."""
    import json

    from intriguing._io import json_safe

    paired = {"a": _evidence(1000, 1000, 0.03, 0.01), "b": _evidence(k, 100, 0.02, None)}
    c = claims.distortion_tiny(ROWS, paired, REFERENCE, "t1-tiny", "Table 1")
    part = {p["model"]: p for p in c["parts"]}
    assert (part["b"]["ci"] is None) is (k == 1)
    if k == 1:
        assert part["b"]["verdict"] == "inconclusive" and c["verdict"] == "inconclusive"
        assert c["ci"] == part["a"]["ci"]  # the worst part with an interval
    assert json.loads(json.dumps(json_safe(c), allow_nan=False)) == json_safe(c)
    assert all(v is None or np.isfinite(v) for p in c["parts"] for v in (p.get("ci") or []))


def test_every_claim_carries_the_schema_fields() -> None:
    table, paired = _transfer({"a": (30, 0), "b": (30, 0)})
    for e in paired.values():
        e.update(_figure7(0, 100, 100))
        e["noise"] = [{"stddev": 0.1, "cells": _noise_cells(30, 0, ["a", "b"])}]
    rows = [{"model": m, "paper": {}} for m in ("a", "b")]
    tables = {
        "table1": {"rows": rows},
        "table2": table,
        "table3": {"rows": rows},
        "table4": table,
    }
    out = claims.all_claims(
        tables, {"table1": paired, "table3": paired}, REFERENCE, ["a"], units=[_units(0.5, 0.0)]
    )
    assert out[0]["id"] == "units-not-privileged"
    assert "spectral-certified" not in {c["id"] for c in out}  # a sanity check, not a claim
    for c in out:
        assert {"verdict", "rule", "statistic", "n", "p_value", "ci"} <= c.keys()
        assert c["verdict"] in stats.VERDICTS
        assert (c["p_value"] is None) != (c["ci"] is None)
        assert c["rule"]


def test_sanity_checks_are_separate_and_can_fail() -> None:
    rows = [{"model": "a", "n": 10, "verify_mismatches": 0}]
    tables = {"table1": {"rows": rows}, "table3": {"rows": []}}
    sandwich = {"model": "a", "summary": {"violations": 0, "used": 10}}
    ok = claims.sanity_checks(tables, {"x": _evidence(10, 10)}, [sandwich])
    assert [c["passed"] for c in ok] == [True, True, True]
    bad_box = _evidence(10, 10) | {"box": {"min": -0.01, "max": 1.0}}
    rows[0]["verify_mismatches"] = 1
    bad = claims.sanity_checks(
        tables, {"x": bad_box}, [{"model": "a", "summary": {"violations": 2, "used": 10}}]
    )
    assert [c["passed"] for c in bad] == [False, False, False]


def test_verdict_stability_flags_a_changing_verdict() -> None:
    def doc(seed: int, verdict: str) -> dict[str, Any]:
        return {
            "config": {"seed": seed},
            "claims": [{"id": "x", "verdict": "holds"}, {"id": "y", "verdict": verdict}],
        }

    s = verdict_stability([doc(0, "holds"), doc(1, "fails"), doc(2, "holds")])
    assert s["seeds"] == [0, 1, 2]
    assert s["claims"]["x"] == {"verdicts": ["holds"] * 3, "stable": True}
    assert s["claims"]["y"]["stable"] is False
