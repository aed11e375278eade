"""Recovering the true label and the flip-distance detector (issue #9, item 3).

Oracles: a ROC AUC counted pair by pair on a tiny example; a linear 2-class model with a known
hyperplane, where the exact distances are ``d`` (clean to the boundary), ``eps`` (adversarial
back to it) and ``d + 2 eps`` (the adversarial pushed twice as far), box inactive.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.analysis.recovery import (
    auc_confidence_interval,
    auc_low_is_positive,
    auc_score_interval,
    recover_and_detect,
    roc_points,
    separation,
    summarise_recovery,
    tpr_at_fpr,
)
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
from intriguing.experiments.specs import make_spec

DIM = 20
EPS = 0.02


# ----------------------------------------------------------------------------- AUC
def test_auc_is_the_pairwise_count_with_ties_as_halves() -> None:
    clean = [3.0, 4.0, 2.0]
    adv = [1.0, 2.0, 5.0]
    # adv 1 < all three clean (3); adv 2 < 3, 4 and ties 2 (2.5); adv 5 < none: 5.5 / 9
    assert auc_low_is_positive(clean, adv) == pytest.approx(5.5 / 9)
    brute = np.mean([(a < c) + 0.5 * (a == c) for a in adv for c in clean])
    assert auc_low_is_positive(clean, adv) == pytest.approx(brute)
    assert auc_low_is_positive([5.0, float("inf")], [1.0, 2.0]) == 1.0
    assert auc_low_is_positive([1.0], [2.0]) == 0.0


def test_roc_points_and_tpr_at_fpr_by_hand() -> None:
    clean = [3.0, 4.0, 2.0, 6.0]
    adv = [1.0, 2.5, 5.0]
    roc = roc_points(clean, adv)
    assert roc["fpr"][0] == 0.0 and roc["tpr"][0] == 0.0
    assert roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    # thresholds 1 (tpr 1/3, fpr 0), 2 (fpr 1/4), 2.5 (tpr 2/3, fpr 1/4), ...
    assert tpr_at_fpr(clean, adv, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(clean, adv, 0.25) == pytest.approx(2 / 3)
    assert tpr_at_fpr(clean, adv, 1.0) == 1.0


def test_auc_interval_contains_the_auc_and_is_the_score_interval_under_separation() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(1.0, 1.0, 200)
    adv = rng.normal(0.0, 1.0, 200)
    auc = auc_low_is_positive(clean, adv)
    lo, hi = auc_confidence_interval(clean, adv, n_resamples=500, seed=1)
    assert lo < auc < hi and lo >= 0.0 and hi <= 1.0 and hi - lo < 0.15
    assert auc_confidence_interval([5.0, 6.0], [1.0, 2.0]) == auc_score_interval(1.0, 2, 2)
    sep = separation(clean, adv, n_resamples=200)
    assert sep["auc"] == pytest.approx(auc) and len(sep["roc"]["fpr"]) <= 202


def test_auc_score_interval_by_hand_and_never_a_point() -> None:
    """1 vs 1 separated: (1 - t)^2 <= z^2 t (1 - t) gives t >= 1 / (1 + z^2). The percentile
    bootstrap gave [1, 1] there and for any separated samples ('95% CI 1.000-1.000' from one
    pair); a tie between single values gave [0.5, 0.5]."""
    z2 = 1.959963984540054**2
    lo, hi = auc_score_interval(1.0, 1, 1)
    assert lo == pytest.approx(1 / (1 + z2), rel=1e-6) and hi == 1.0
    assert auc_confidence_interval([1.0], [2.0]) == pytest.approx((0.0, 1 - 1 / (1 + z2)))
    tie_lo, tie_hi = auc_confidence_interval([1.0], [1.0])
    assert tie_lo < 0.5 < tie_hi and tie_lo == pytest.approx(1 - tie_hi)
    all_tied = auc_confidence_interval([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])  # was [0.5, 0.5]
    assert all_tied == auc_score_interval(0.5, 3, 3) and all_tied[0] < 0.2
    widths = [1 - auc_score_interval(1.0, n, n)[0] for n in (1, 3, 10, 100, 1000)]
    assert all(a > b > 0 for a, b in itertools.pairwise(widths))
    for auc in np.linspace(0.0, 1.0, 11):
        lo, hi = auc_score_interval(float(auc), 4, 7)
        assert 0.0 <= lo <= auc <= hi <= 1.0 and hi - lo > 0.1
    with pytest.raises(IntriguingError):
        auc_score_interval(1.5, 3, 3)


@pytest.mark.parametrize("n", [20, 200])
def test_auc_interval_is_centred_when_each_pair_is_close(n: int) -> None:
    """Each image's adversarial statistic just above its clean one (after amplification): the
    AUC is (n - 1) / 2n by hand, and resampling pairs gave intervals that excluded it."""
    clean = np.arange(n, dtype=np.float64)
    adv = clean + 0.1
    auc = auc_low_is_positive(clean, adv)
    assert auc == pytest.approx((n - 1) / (2 * n))
    lo, hi = auc_confidence_interval(clean, adv, n_resamples=1000, seed=0)
    assert lo < auc < hi and lo < 0.5 < hi  # a chance-level detector is not 'below chance'


def test_auc_refuses_nan_and_empty() -> None:
    with pytest.raises(IntriguingError, match="NaN"):
        auc_low_is_positive([1.0, float("nan")], [0.5])
    with pytest.raises(IntriguingError, match="empty"):
        auc_low_is_positive([], [0.5])


# ----------------------------------------------------------------------------- linear oracle
def _plane() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model, originals ``(8, 1, DIM)``, distances ``d_i`` and the unit normal ``w``."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(DIM, generator=g)
    w = w / w.norm()
    x = 0.5 + 0.02 * (2 * torch.rand(8, DIM, generator=g) - 1)
    lin = nn.Linear(DIM, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(DIM), w]))
        lin.bias.copy_(torch.tensor([0.0, float(-(w @ torch.full((DIM,), 0.5))) - 0.15]))
    d = -(x @ w + lin.bias[1].detach())  # distance of each original to the boundary (class 0 side)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    return model, x.reshape(8, 1, DIM), d.double(), w


def test_recovery_on_a_linear_model_meets_the_exact_distances() -> None:
    model, x, d, w = _plane()
    adv = x + ((d + EPS)[:, None] * w).reshape(8, 1, DIM).float()
    labels = torch.zeros(8, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = recover_and_detect(model, x, adv, labels, amplify=(2.0,))
    root = DIM**0.5  # RMS -> L2
    assert bool(per["recovered"].all()) and bool((per["recovered_predicted"] == 0).all())
    back = per["back_rms"] * root
    assert bool((back >= EPS * (1 - 1e-3)).all()) and bool((back <= EPS * 1.15 + 1e-4).all())
    clean = per["detector_clean"] * root
    assert torch.allclose(clean, d, rtol=0.05)
    assert torch.allclose(per["oracle_clean"] * root, d, rtol=0.05)
    to_orig = per["recovered_to_original_rms"] * root
    assert torch.allclose(to_orig, d, rtol=0.05, atol=1e-3)  # x'' lands on the boundary, not at x
    pushed = per["detector_amplified_2"] * root
    assert torch.allclose(pushed, d + 2 * EPS, rtol=0.05)
    summary = summarise_recovery(per, n_resamples=100)
    json.dumps(summary, allow_nan=False)
    assert summary["recovery_rate"] == 1.0 and summary["recovered"] == 8
    assert summary["detector"]["auc"] == 1.0 and summary["oracle"]["auc"] == 1.0
    assert summary["detector"]["tpr_at_fpr_0.05"] == 1.0
    amp = summary["detector_amplified"]["2"]
    assert amp["still_adversarial"] == 8 and amp["auc"] < 0.5


def test_recovery_refuses_bad_input() -> None:
    model, x, d, w = _plane()
    adv = x + ((d + EPS)[:, None] * w).reshape(8, 1, DIM).float()
    y = torch.zeros(8, dtype=torch.int64)
    with pytest.raises(IntriguingError, match="still have their true label"):
        recover_and_detect(model, x, x.clone(), y)
    with pytest.raises(IntriguingError, match="misclassified"):
        recover_and_detect(model, adv, x, y)
    with pytest.raises(IntriguingError, match="differ in shape"):
        recover_and_detect(model, x, adv[:4], y)
    with pytest.raises(IntriguingError, match=r"\[0, 1\]"):
        recover_and_detect(model, x, adv * 3, y)
    with pytest.raises(IntriguingError, match="factors"):
        recover_and_detect(model, x, adv, y, amplify=(0.5,))
    with pytest.raises(IntriguingError, match="clean_statistic"):
        recover_and_detect(model, x, adv, y, clean_statistic=torch.zeros(3))


# ----------------------------------------------------------------------------- experiment + CLI
# the reproduce pipeline's "tiny" attack settings (few constants and iterations, no polish)
TINY_ATTACK: dict[str, Any] = make_spec("tiny").attack.kwargs()


def test_recover_of_a_model_stores_every_example(tmp_path: Path) -> None:
    """The MODEL path's JSON lacked ``per_example``, which docs/critics.md lists and the zoo
    path stores."""
    out = tmp_path / "r.json"
    argv = ["recover", "softmax1", "--n", "3", "--json", str(out)]
    result = CliRunner().invoke(cli, [*argv, "--dataset", "mnist-5k"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert len(doc["per_example"]["detector_adversarial"]) == doc["n"] == 3


def test_recover_experiment_on_a_zoo_model(mnist_dir: Path, tmp_path: Path) -> None:
    from intriguing.experiments.critics import run_critics

    options = {"attack": TINY_ATTACK, "bootstrap": 50, "seed": 0, "confidence": 0.95}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_critics(
            "recover",
            ["softmax1"],
            tmp_path,
            dataset="mnist-5k",
            n=4,
            attack=TINY_ATTACK,
            options={**options, "amplify": [2.0]},
        )
    r = doc["models"]["softmax1"]
    assert r["n"] == 4 and r["clean_statistic_from_source"] is True
    assert 0.0 <= r["recovery_rate"] <= 1.0 and 0.0 <= r["detector"]["auc"] <= 1.0
    assert len(r["per_example"]["detector_adversarial"]) == 4
    assert "2" in r["detector_amplified"]
    assert (tmp_path / "recover.md").read_text().count("softmax1") >= 2
    assert (tmp_path / "figures" / "recover.png").exists()
    assert "recovered it for" in doc["verdict"]


def test_recover_cli_user_mistakes_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["recover", "--amplify", "0.5", "--out", str(tmp_path)],
        ["recover", "--amplify", "two", "--out", str(tmp_path)],
        ["recover", "--bootstrap", "0", "--out", str(tmp_path)],
        ["recover", "--n", "0", "--models", "softmax1", "--out", str(tmp_path)],
        ["recover", "--max-iter", "0", "--out", str(tmp_path)],
        ["recover", "--models", "LeNet", "--out", str(tmp_path)],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error:") and "Traceback" not in result.output


class _Scaled(nn.Module):
    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def _tiny_logit_warnings(model: nn.Module, x: torch.Tensor, adv: torch.Tensor) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recover_and_detect(model, x, adv, torch.zeros(8, dtype=torch.int64), amplify=(2.0,))
    return sum("have logits below" in str(w.message) for w in caught)


def test_the_attacks_from_the_boundary_do_not_call_a_fine_model_scaled_down() -> None:
    """Adversarial examples of a two-class model sit where both logits are near 0: the attacks
    that start there warned, once per attack, that the model's logits were tiny and its output
    should be multiplied by a constant, though its clean logits were not tiny."""
    model, x, d, w = _plane()
    adv = x + ((d + 0.004)[:, None] * w).reshape(8, 1, DIM).float()  # logits (0, 0.004)
    assert _tiny_logit_warnings(model, x, adv) == 0
    assert _tiny_logit_warnings(_Scaled(model, 1e-3).eval(), x, adv) > 0  # truly scaled down


def test_a_misspelled_bootstrap_setting_is_named() -> None:
    """``confidance=0.9`` raised ``TypeError: auc_confidence_interval() got an unexpected ...``."""
    with pytest.raises(
        IntriguingError, match=r"unknown bootstrap setting.*confidance; valid: conf"
    ):
        summarise_recovery({}, confidance=0.9)  # type: ignore[call-arg]
