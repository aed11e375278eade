"""Rarity of adversarial pockets (issue #9, item 2): sphere sampling in the box, boundary distances.

Oracles: the exact L2 norm of the clipped-ray points and a brute-force bisection of the same ray;
the spherical-cap fraction (regularised incomplete beta; Archimedes' ``(1 - d/r) / 2`` in 3-D) for
a linear 2-class model whose box constraint is inactive; the exact distance ``d / cos`` along a ray
to a hyperplane; Clopper-Pearson bounds in closed form at ``k = 0`` and ``k = n``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.analysis.rarity import (
    ClippedRays,
    RarityConfig,
    cap_probability,
    clopper_pearson,
    flip_counts,
    measure_rarity,
    ray_boundary_distances,
    uniform_directions,
)
from intriguing.attacks.metrics import SUCCESS_MARGIN
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
from intriguing.experiments.specs import make_spec

DIM = 20
DIST = 0.1


def _hyperplane_model(w: torch.Tensor, x0: torch.Tensor, d: float) -> nn.Module:
    """Logits ``[0, w.(x - x0) - d]`` (``w`` unit): class 0 at ``x0``, boundary at distance ``d``."""
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        lin.bias.copy_(torch.tensor([0.0, float(-(w @ x0) - d)]))
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture()
def plane() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(DIM, generator=g)
    w = w / w.norm()
    x0 = torch.full((DIM,), 0.5)
    return _hyperplane_model(w, x0, DIST), x0, w


# ----------------------------------------------------------------------------- clipped rays
def test_clipped_ray_points_have_the_exact_norm_and_stay_in_the_box() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, generator=g)
    x[:30] = 0.0
    x[30:40] = 1.0
    u = uniform_directions(50, 64, g)
    rays = ClippedRays(x, u)
    for rho in (0.05, 0.7, 2.5):
        points, ok = rays.at(rho)
        assert bool(ok.all())
        assert float(points.min()) >= 0.0 and float(points.max()) <= 1.0
        norms = (points.double() - x.double()).norm(dim=1)
        assert torch.allclose(norms, torch.full_like(norms, rho), atol=1e-6)
        # brute force: bisection on s of ||clip(x + s u) - x|| = rho agrees with the closed form
        s, _ = rays.scale_for(rho)
        lo, hi = torch.zeros(50, dtype=torch.float64), torch.full((50,), 100.0, dtype=torch.float64)
        for _ in range(80):
            mid = (lo + hi) / 2
            n = ((x.double() + mid[:, None] * u).clamp(0, 1) - x.double()).norm(dim=1)
            lo, hi = torch.where(n < rho, mid, lo), torch.where(n < rho, hi, mid)
        assert torch.allclose(s, hi, rtol=1e-6)


def test_a_ray_shorter_than_rho_is_unreachable_and_ends_at_its_corner() -> None:
    x = torch.tensor([0.2, 0.9, 0.0])
    u = torch.tensor([[0.6, 0.0, -0.8], [1.0, 0.0, 0.0]], dtype=torch.float64)
    rays = ClippedRays(x, u)
    # ray 0: pixel 0 goes to 1 (0.8), pixel 2 is already at 0; ray 1: only pixel 0 moves
    assert torch.allclose(rays.max_norm, torch.tensor([0.8, 0.8], dtype=torch.float64))
    points, ok = rays.at(1.0)
    assert not bool(ok.any())
    assert torch.allclose(points[0], torch.tensor([1.0, 0.9, 0.0]))


def test_plain_clipping_shrinks_the_norm_on_a_saturated_image() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(100)
    u = uniform_directions(200, 100, g)
    _, norms = ClippedRays(x, u).clipped(1.0)
    # only the positive half of the coordinates survives: about 1/sqrt(2) of the norm
    assert 0.6 < float(norms.mean()) < 0.8


# ----------------------------------------------------------------------------- closed forms
def test_cap_probability_matches_archimedes_in_three_dimensions() -> None:
    for d, r in ((0.0, 1.0), (0.3, 1.0), (0.5, 2.0)):
        assert cap_probability(d, r, 3) == pytest.approx((1 - d / r) / 2, abs=1e-12)
    assert cap_probability(2.0, 1.0, 50) == 0.0


def test_sphere_sampler_matches_the_spherical_cap_when_the_box_is_inactive(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x0, _ = plane
    rho = 0.25  # < 0.5 = every pixel's room: the box never acts, points are x0 + rho u
    g = torch.Generator().manual_seed(7)
    rays = ClippedRays(x0, uniform_directions(40000, DIM, g))
    expected = cap_probability(DIST, rho, DIM)
    for box in ("rescale", "clip"):
        counts = flip_counts(model, rays, 0, rho, box=box)
        assert counts["valid"] == 40000 and counts["unreachable"] == 0
        assert counts["mean_norm"] == pytest.approx(rho, rel=1e-6)
        lo, hi = clopper_pearson(counts["flips"], counts["valid"], 0.999)
        assert lo <= expected <= hi, (counts, expected)
    assert 0.02 < expected < 0.5  # a non-trivial probability: the test has power


def test_ray_distance_is_d_over_cos_before_the_box_acts(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x0, w = plane
    g = torch.Generator().manual_seed(11)
    u = uniform_directions(300, DIM, g)
    dist = ray_boundary_distances(model, ClippedRays(x0, u), 0, start=0.02, bisect_steps=40)
    cos = (u @ w.double()).clamp_min(1e-12)
    # a success needs the logit lead SUCCESS_MARGIN (logits below 1 here): the boundary is there
    exact = (DIST + SUCCESS_MARGIN) / cos
    clean = exact < 0.5  # crosses before any pixel can saturate
    assert int(clean.sum()) > 20
    assert torch.allclose(dist[clean], exact[clean], rtol=1e-4)  # float32 logits
    assert bool((dist[clean] >= exact[clean] * (1 - 1e-4)).all())


def test_clopper_pearson_closed_forms() -> None:
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    lo, hi = clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), rel=1e-9) and hi == 1.0
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(IntriguingError, match="0 <= k <= n"):
        clopper_pearson(5, 3)


# ----------------------------------------------------------------------------- the measurement
def _copies(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor], n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` copies of the plane's original, its adversarial just past the boundary, labels 0."""
    _, x0, w = plane
    originals = x0.repeat(n, 1).reshape(n, 1, DIM)
    adversarials = (x0 + (DIST + 0.01) * w).clamp(0, 1).repeat(n, 1).reshape(n, 1, DIM)
    return originals, adversarials, torch.zeros(n, dtype=torch.int64)


def test_measure_rarity_pools_counts_and_compares_ray_distances(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model = plane[0]
    originals, adversarials, labels = _copies(plane, 3)
    cfg = RarityConfig(samples=500, scales=(1.0, 2.0), ray_directions=40, seed=5)
    out = measure_rarity(model, originals, adversarials, labels, cfg)
    json.dumps(out, allow_nan=False)
    pooled = out["pooled"]["1"]
    per = [e["scales"]["1"] for e in out["per_example"]]
    assert pooled["flips"] == sum(e["flips"] for e in per) and pooled["valid"] == 1500
    assert pooled["ci"] == list(clopper_pearson(pooled["flips"], 1500))
    rho = (DIST + 0.01) * math.sqrt(1.0)
    assert out["per_example"][0]["l2"] == pytest.approx(rho, rel=1e-5)
    expected = cap_probability(DIST, rho, DIM)
    assert pooled["ci"][0] <= expected + 0.02 and expected - 0.02 <= pooled["ci"][1]
    # twice the radius crosses more often; the adversarial direction is the shortest way out
    assert out["pooled"]["2"]["rate"] > pooled["rate"]
    assert out["rays"]["ratio_min"] >= DIST / rho - 1e-6
    # the same seed gives the same numbers (each example has its own seeded generator)
    again = measure_rarity(model, originals, adversarials, labels, cfg)
    assert again["pooled"] == out["pooled"]


def test_directions_in_blocks_give_the_same_counts_and_distances(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large images are measured in blocks of directions (all 1000 at once held 16 GB for
    3x224x224): the counts and ray distances equal one block's."""
    import intriguing.analysis.rarity as rarity

    model = plane[0]
    originals, adversarials, labels = _copies(plane, 2)
    cfg = RarityConfig(samples=300, scales=(1.0, 2.0), ray_directions=30, seed=5)
    whole = measure_rarity(model, originals, adversarials, labels, cfg)
    monkeypatch.setattr(rarity, "RAY_BYTES", rarity.RAY_ARRAYS * 8 * DIM * 16)  # 16 per block
    assert len(list(rarity.ray_blocks(originals[0], 30, torch.Generator()))) == 2
    blocks = measure_rarity(model, originals, adversarials, labels, cfg)
    for scale in ("1", "2"):
        for key in ("flips", "valid", "unreachable", "ci"):
            assert blocks["pooled"][scale][key] == whole["pooled"][scale][key]
        for a, b in zip(blocks["per_example"], whole["per_example"], strict=True):
            assert a["scales"][scale]["mean_norm"] == pytest.approx(
                b["scales"][scale]["mean_norm"], rel=1e-12
            )
    # stored rounded to 4 decimals: a block's forward sums in another order (the CPU's matmul
    # kernels depend on the batch), which can move a ratio across a rounding edge (5.2579 / 5.258)
    got, want = blocks["rays"]["ratios_sample"], whole["rays"]["ratios_sample"]
    assert [v is None for v in got] == [v is None for v in want]  # the same rays censored
    assert [v for v in got if v is not None] == pytest.approx(
        [v for v in want if v is not None], rel=0, abs=1.01e-4
    )


def test_measure_rarity_refuses_bad_input(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x0, w = plane
    x = x0.reshape(1, 1, DIM)
    adv = (x0 + 0.2 * w).clamp(0, 1).reshape(1, 1, DIM)
    y = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(IntriguingError, match="equal their original"):
        measure_rarity(model, x, x.clone(), y)
    with pytest.raises(IntriguingError, match="NaN"):
        measure_rarity(model, x, torch.full_like(adv, float("nan")), y)
    with pytest.raises(IntriguingError, match=r"\[0, 1\]"):
        measure_rarity(model, x, adv + 2.0, y)
    with pytest.raises(IntriguingError, match="not classified"):
        measure_rarity(model, x, adv, torch.ones(1, dtype=torch.int64))
    with pytest.raises(IntriguingError, match="differ in shape"):
        measure_rarity(model, x, adv.reshape(1, DIM), y)
    bad_settings: list[dict[str, Any]] = [
        {"samples": 0},
        {"scales": (-1.0,)},
        {"box": "wrap"},
        {"confidence": 1.5},
        {"samples": 10.5},  # these three failed inside measure_rarity, after a forward pass
        {"seed": None},
        {"scales": "1"},
    ]
    for bad in bad_settings:  # refused when the settings are made, before any work
        with pytest.raises(IntriguingError):
            RarityConfig(**bad)
    # a repeated scale counted the same directions twice (valid 20 of 10 samples; interval halved)
    for repeated in ((1.0, 1.0, 2.0), (1.0, 1.0000001)):
        with pytest.raises(IntriguingError, match="scales list a value twice"):
            RarityConfig(scales=repeated)
    with pytest.raises(IntriguingError, match="training mode"):
        measure_rarity(model.train(), x, adv, y)


# ----------------------------------------------------------------------------- experiment + CLI
# the reproduce pipeline's "tiny" attack settings (few constants and iterations, no polish)
TINY_ATTACK: dict[str, Any] = make_spec("tiny").attack.kwargs()


def test_rarity_experiment_on_a_zoo_model_resumes(mnist_dir: Path, tmp_path: Path) -> None:
    from intriguing.experiments.critics import run_critics

    options = {
        "config": {
            "samples": 100,
            "scales": [1.0],
            "ray_directions": 8,
            "grid": 16,
            "bisect_steps": 10,
            "box": "rescale",
            "confidence": 0.95,
            "seed": 0,
        }
    }
    kwargs = {"dataset": "mnist-5k", "n": 3, "source_n": 4, "attack": TINY_ATTACK}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k banner
        doc = run_critics("rarity", ["softmax1"], tmp_path, options=options, **kwargs)  # type: ignore[arg-type]
    r = doc["models"]["softmax1"]
    assert r["n"] == 3 and r["pooled"]["1"]["valid"] == 300
    assert (tmp_path / "rarity.json").exists() and (tmp_path / "figures" / "rarity.png").exists()
    assert "random directions" in doc["verdict"]
    record = tmp_path / "steps" / "rarity" / "softmax1.json"
    stamp = json.loads(record.read_text())["finished_at"]
    record_src = tmp_path / "steps" / "source" / "softmax1" / "test-n4.json"
    src_stamp = json.loads(record_src.read_text())["finished_at"]
    options["config"]["samples"] = 120  # a changed parameter reruns the step, not the attack
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc2 = run_critics("rarity", ["softmax1"], tmp_path, options=options, **kwargs)  # type: ignore[arg-type]
    assert doc2["models"]["softmax1"]["pooled"]["1"]["valid"] == 360
    assert json.loads(record_src.read_text())["finished_at"] == src_stamp
    assert json.loads(record.read_text())["finished_at"] >= stamp


def test_rarity_cli_user_mistakes_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        ["rarity", "--models", "nope", "--out", str(tmp_path)],
        ["rarity", "--scales", "1,x", "--out", str(tmp_path)],
        ["rarity", "--samples", "0", "--out", str(tmp_path)],
        ["rarity", "--from-run", str(tmp_path / "missing"), "--out", str(tmp_path)],
        ["rarity", "--models", "softmax1"],
    ]
    for args in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    result = runner.invoke(cli, cases[0])
    assert (
        result.output.strip().startswith("Error:") and len(result.output.strip().splitlines()) == 1
    )


def _payload(flips: int, valid: int) -> dict[str, Any]:
    ci = list(clopper_pearson(flips, valid))
    pooled = {"1": {"flips": flips, "valid": valid, "rate": flips / valid, "ci": ci}}
    return {"models": {"m": {"pooled": pooled, "rays": {"ratio_median": 9.0}}}}


def test_rarity_verdict_follows_the_confidence_bounds() -> None:
    from intriguing.report.critics import rarity_verdict

    rare = rarity_verdict(_payload(0, 100_000))  # upper bound 3.7e-5
    assert "0 of 100,000" in rare and "as the paper says" in rare and "9.0x" in rare
    assert "too few" in rarity_verdict(_payload(0, 1000))  # upper bound 3.7e-3: inconclusive
    assert "too often" in rarity_verdict(_payload(50, 1000))  # lower bound 3.7e-2


def test_rays_zero_skips_the_boundary_distance(
    plane: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    """``--rays 0`` is accepted by the CLI and skips the ray distances (issue 17: help and range agree)."""
    from intriguing.cli.critics_cmds import rarity

    rays_option = next(p for p in rarity.params if p.name == "rays")
    assert isinstance(rays_option.type, click.IntRange) and rays_option.type.min == 0
    assert "0: skip" in (rays_option.help or "")
    model, x0, w = plane
    originals = x0.repeat(2, 1).reshape(2, 1, DIM)
    adversarials = (x0 + (DIST + 0.01) * w).clamp(0, 1).repeat(2, 1).reshape(2, 1, DIM)
    cfg = RarityConfig(samples=50, scales=(1.0,), ray_directions=0, seed=1)
    out = measure_rarity(model, originals, adversarials, torch.zeros(2, dtype=torch.int64), cfg)
    assert out["rays"] == {"directions": 0}
    assert out["pooled"]["1"]["valid"] == 100


def test_the_median_of_example_medians_counts_censored_examples_as_farthest() -> None:
    """Medians 2, censored (no boundary within reach) and 4: the median is 4 by hand. Dropping
    the censored example gave 2, the examples farthest from the boundary left out."""
    from intriguing.analysis.rarity import _ray_summary

    inf = float("inf")
    ratios = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([inf, inf, 5.0]), torch.full((3,), 4.0)]
    summary = _ray_summary(ratios, 3)
    assert summary["median_of_example_medians"] == 4.0
    assert summary["censored"] == 2 and summary["ratio_median"] == 4.0
    all_censored = _ray_summary([torch.full((2,), inf)], 2)
    assert all_censored["median_of_example_medians"] is None


@pytest.mark.parametrize(
    ("count", "dim", "rows"), [(100, 784, 16), (35, 7, 16), (33, 1, 16), (5, 3, 16)]
)
def test_directions_drawn_in_blocks_are_those_of_one_draw(
    monkeypatch: pytest.MonkeyPatch, count: int, dim: int, rows: int
) -> None:
    """The directions are drawn block by block (1000 of 3x224x224 held 1.2 GB at once): the same
    numbers bit for bit, and the generator left where one draw leaves it (the ray directions are
    drawn next from it)."""
    import intriguing.analysis.rarity as rarity

    monkeypatch.setattr(rarity, "RAY_BYTES", rarity.RAY_ARRAYS * 8 * dim * rows)
    one, blocks = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    whole = uniform_directions(count, dim, one)
    parts = list(rarity.direction_blocks(count, dim, blocks))
    assert len(parts) > 1 or count * dim <= rows * dim
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(one.get_state(), blocks.get_state())


def test_examples_with_a_flip_are_counted_over_examples_that_measured_something() -> None:
    """At a scale where every direction of every example is unreachable, the share of examples
    with a flip was '0 of 3, [0, 0.71]' over examples that measured nothing."""
    from intriguing.analysis.rarity import _pooled

    def example(flips: int, valid: int) -> dict[str, Any]:
        return {"scales": {"9": {"flips": flips, "valid": valid, "unreachable": 10 - valid}}}

    pooled = _pooled([example(0, 0), example(0, 0), example(0, 0)], "9", 0.95)
    assert pooled["examples_measured"] == 0 and pooled["examples_with_flip_ci"] == [0.0, 1.0]
    pooled = _pooled([example(1, 10), example(0, 0), example(0, 4)], "9", 0.95)
    assert pooled["examples_measured"] == 2
    assert pooled["examples_with_flip_ci"] == list(clopper_pearson(1, 2, 0.95))
