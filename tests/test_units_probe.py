"""``units`` on wide layers and its option checks: the fast PCA and rotation paths give what the
dense ones give (or the same law where the draw changes), wide layers finish, infeasible sizes and
silently ignored option combinations are one ``Error: ...`` line with exit code 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from intriguing.analysis import directions as dirs
from intriguing.analysis.units import UnitsConfig, analyse_units
from intriguing.cli.main import cli
from intriguing.errors import InvalidInputError

FAST = ["--n-null", "100", "--n-resamples", "99", "--alphas", "none", "--k", "2",
        "--n-directions", "2", "--directions", "natural,random"]  # fmt: skip

MODELS = """
import torch
from torch import nn


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def huge():
    return nn.Sequential(nn.Upsample(scale_factor=40), nn.Flatten())
"""


def _dense_pca(phi: np.ndarray, n: int, centre: bool) -> np.ndarray:
    """The reference: full eigh of the D x D matrix, axes oriented by positive third moment."""
    mean = phi.mean(axis=0)
    second = phi.T @ phi / len(phi) - (np.outer(mean, mean) if centre else 0.0)
    values, vectors = np.linalg.eigh(second)
    axes = vectors[:, np.argsort(values)[::-1][:n]].T
    third = (((phi - mean) @ axes.T) ** 3).sum(axis=0)
    return axes * np.where(third < 0, -1.0, 1.0)[:, None]


@pytest.mark.parametrize("n_rows", [400, 60])  # D x D subset eigh; N x N Gram (N < D)
@pytest.mark.parametrize("centre", [True, False])
def test_fast_pca_equals_the_dense_eigendecomposition(n_rows: int, centre: bool) -> None:
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.2, 80)
    phi = np.maximum(rng.standard_normal((n_rows, 80)) * scales + 0.3, 0.0)
    got = dirs.pca_directions(phi, 12, centre=centre)
    np.testing.assert_allclose(got, _dense_pca(phi, 12, centre), atol=1e-8)


def test_pca_with_fewer_images_than_dimensions_keeps_only_axes_with_variance() -> None:
    phi = np.random.default_rng(1).random((6, 50))
    axes = dirs.pca_directions(phi, 20, centre=True)
    assert axes.shape == (5, 50)  # 6 centred images span 5 dimensions
    np.testing.assert_allclose(axes @ axes.T, np.eye(5), atol=1e-10)


def test_haar_rotation_angles_have_the_haar_trace_moments() -> None:
    rng = np.random.default_rng(2)
    for dim in (20, 21):
        angles = np.array([dirs.haar_rotation_angles(dim, rng) for _ in range(4000)])
        assert angles.shape == (4000, dim // 2) and np.all((angles >= 0) & (angles <= np.pi))
        odd = dim % 2
        tr1 = 2 * np.cos(angles).sum(axis=1) + odd  # Haar SO(D): E tr Q = 0, E (tr Q)^2 = 1
        tr2 = 2 * np.cos(2 * angles).sum(axis=1) + odd  # E tr Q^2 = 1
        assert abs(tr1.mean()) < 0.08 and abs((tr1**2).mean() - 1) < 0.12
        assert abs(tr2.mean() - 1) < 0.1


def test_subspace_rotation_is_one_rotation_over_all_alphas() -> None:
    units = np.array([1, 5, 7, 30])
    rows = dirs.subspace_rotated_units(
        40, units, (0.0, 0.25, 0.5, 0.75, 1.0), np.random.default_rng(3)
    )
    np.testing.assert_array_equal(rows[0.0], dirs.natural_basis(40, units))
    for alpha in (0.25, 0.5, 0.75, 1.0):
        np.testing.assert_allclose(rows[alpha] @ rows[alpha].T, np.eye(4), atol=1e-12)
    # <Q^0.25 e_i, Q^0.75 e_j> = <e_i, Q^0.5 e_j>: every alpha comes from the same Q.
    np.testing.assert_allclose(rows[0.25] @ rows[0.75].T, rows[0.5][:, units].T, atol=1e-12)
    again = dirs.subspace_rotated_units(
        40, units, (0.0, 0.25, 0.5, 0.75, 1.0), np.random.default_rng(3)
    )
    np.testing.assert_array_equal(again[0.5], rows[0.5])  # seeded


def test_subspace_rotation_has_the_law_of_the_dense_one() -> None:
    units, n = np.array([0, 1]), 150

    def moments(draw: object) -> np.ndarray:
        values = []
        for i in range(n):
            v = draw(np.random.default_rng(i))  # type: ignore[operator]
            values.append((v[0, 0], v[0, 1] ** 2, v[1, 1]))
        return np.array(values)

    fast = moments(lambda r: dirs.subspace_rotated_units(6, units, (0.5,), r)[0.5])
    dense = moments(
        lambda r: dirs.rotated_basis(dirs.rotation_generator(dirs.haar_rotation(6, r)), 0.5, units)
    )
    se = np.sqrt(fast.var(axis=0) / n + dense.var(axis=0) / n)
    assert np.all(np.abs(fast.mean(axis=0) - dense.mean(axis=0)) < 5 * se)


def test_small_layers_keep_the_dense_rotation_draw() -> None:
    units = np.array([0, 3, 8])
    rotated = dirs.RotatedUnits(10, units, (0.3, 1.0), np.random.default_rng(4))
    generator = dirs.rotation_generator(dirs.haar_rotation(10, np.random.default_rng(4)))
    for alpha in (0.3, 1.0, 0.77):  # the dense path serves any alpha
        np.testing.assert_array_equal(
            rotated.basis(alpha), dirs.rotated_basis(generator, alpha, units)
        )


def test_a_wide_layer_finishes_with_orthonormal_directions() -> None:
    rng = np.random.default_rng(5)
    dim, n_images = 4200, 300
    assert dim > dirs.DENSE_ROTATION_DIM
    labels = rng.integers(0, 3, n_images)
    phi = np.maximum(rng.standard_normal((n_images, dim)) + labels[:, None] * 0.1, 0.0)
    images = rng.random((n_images, 1, 4, 4))
    config = UnitsConfig(k=4, n_directions=20, n_null=100, n_resamples=99, alphas=(0.0, 0.5, 1.0))
    result = analyse_units(phi.astype(np.float32), images, labels, config)
    assert result.dim == dim
    for name in ("natural", "random", "rotation", "pca"):
        v = result.families[name].directions
        assert v.shape == (20, dim)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-10)
    for name in ("rotation", "pca"):
        v = result.families[name].directions
        np.testing.assert_allclose(v @ v.T, np.eye(20), atol=1e-10)
    curve = result.rotation_curve
    assert curve is not None and curve["mean_abs_cos_to_unit"][0] == 1.0
    assert curve["mean_abs_cos_to_unit"][-1] < 0.1


def test_infeasible_sizes_are_refused_before_any_work() -> None:
    config = UnitsConfig(families=("natural", "rotation"), n_directions=100)
    with pytest.raises(InvalidInputError, match=r"rotation family/curve .*\(limit 2 GiB\)"):
        config.check_dimension(2_000_000, 100)
    UnitsConfig(families=("natural",), alphas=()).check_dimension(2_000_000, 100)
    with pytest.raises(InvalidInputError, match=r"9000x9000 eigenproblem \(limit 8192\)"):
        UnitsConfig(families=("pca",), alphas=()).check_dimension(9000, 20000)
    UnitsConfig(families=("pca",), alphas=()).check_dimension(20000, 500)  # Gram: 500 x 500


# ------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


@pytest.fixture(scope="module")
def tensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("probe_data") / "x.npz"
    np.savez(path, images=torch.rand(6, 1, 28, 28).numpy(), labels=np.arange(6) % 2)
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def test_k_help_and_enforced_range_agree() -> None:
    assert "2<=x<=1000" in run("units", "--help").output
    one_line_error(run("units", "softmax1", "--k", "1"), "--k", "2<=x<=1000")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--split", "train"], ["--split", "--tensors"]),
        (["--split", "test"], ["--split", "--tensors"]),  # typed, even if it is the default
        (["--rows", "3"], ["--rows", "--out"]),
        (["--model-seed", "4"], ["--model-seed", "factory"]),
    ],
)
def test_options_that_would_be_ignored_are_refused(
    models: Path, tensors: Path, extra: list[str], words: list[str]
) -> None:
    result = run("units", f"{models}:linear", "--layer", "1", "--tensors", str(tensors),
                 *FAST, *extra)  # fmt: skip
    one_line_error(result, *words)


def test_default_split_with_tensors_still_works(models: Path, tensors: Path) -> None:
    result = run("units", f"{models}:linear", "--layer", "1", "--tensors", str(tensors), *FAST)
    assert result.exit_code == 0, result.output


def test_a_huge_layer_is_refused_before_the_activations(models: Path, tensors: Path) -> None:
    """D = 40^2 * 28^2 = 1254400: the rotation draw would need tens of GiB."""
    result = run("units", f"{models}:huge", "--layer", "1", "--tensors", str(tensors),
                 "--directions", "natural,rotation", "--k", "2", "--n-null", "100",
                 "--n-resamples", "99")  # fmt: skip
    one_line_error(result, "rotation family/curve for D = 1254400", "limit")
