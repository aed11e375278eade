"""Direction families of the unit analysis (§3): natural basis, sphere, Haar rotations, PCA, class means."""

from __future__ import annotations

import numpy as np
import pytest

from intriguing.analysis import directions as dirs
from intriguing.errors import InvalidInputError


def test_natural_basis_rows_are_the_chosen_unit_vectors() -> None:
    basis = dirs.natural_basis(5, np.array([1, 3]))
    np.testing.assert_array_equal(basis, [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]])


def test_pick_units_takes_all_units_when_asked_for_more() -> None:
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(dirs.pick_units(4, 10, rng), [0, 1, 2, 3])
    sample = dirs.pick_units(100, 7, rng)
    assert len(set(sample.tolist())) == 7 and np.all(np.diff(sample) > 0)


def test_random_sphere_is_unit_norm_seeded_and_isotropic() -> None:
    v = dirs.random_sphere(20, 4000, np.random.default_rng(1))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(v[:3], dirs.random_sphere(20, 3, np.random.default_rng(1)))
    # Uniform on S^{D-1}: E[v v^T] = I / D.
    second = v.T @ v / len(v)
    np.testing.assert_allclose(second, np.eye(20) / 20, atol=0.01)


def test_haar_rotation_is_a_rotation() -> None:
    q = dirs.haar_rotation(12, np.random.default_rng(2))
    np.testing.assert_allclose(q @ q.T, np.eye(12), atol=1e-10)
    assert np.linalg.det(q) == pytest.approx(1.0)


def test_fractional_rotation_endpoints_and_group_law() -> None:
    q = dirs.haar_rotation(9, np.random.default_rng(3))
    s = dirs.rotation_generator(q)
    np.testing.assert_allclose(s, -s.T, atol=1e-12)
    np.testing.assert_allclose(dirs.fractional_rotation(s, 0.0), np.eye(9), atol=1e-12)
    np.testing.assert_allclose(dirs.fractional_rotation(s, 1.0), q, atol=1e-8)
    half = dirs.fractional_rotation(s, 0.5)
    np.testing.assert_allclose(half @ half.T, np.eye(9), atol=1e-10)
    np.testing.assert_allclose(half @ half, q, atol=1e-8)
    a, b = dirs.fractional_rotation(s, 0.3), dirs.fractional_rotation(s, 0.45)
    np.testing.assert_allclose(a @ b, dirs.fractional_rotation(s, 0.75), atol=1e-10)


def test_fractional_rotation_of_a_plane_rotation_scales_the_angle() -> None:
    theta = 2.5
    q = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    got = dirs.fractional_rotation(dirs.rotation_generator(q), 0.4)
    a = 0.4 * theta
    np.testing.assert_allclose(got, [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], atol=1e-10)


def test_rotated_basis_interpolates_basis_to_rotation() -> None:
    q = dirs.haar_rotation(6, np.random.default_rng(4))
    s = dirs.rotation_generator(q)
    units = np.array([0, 2, 5])
    np.testing.assert_allclose(
        dirs.rotated_basis(s, 0.0, units), dirs.natural_basis(6, units), atol=1e-12
    )
    np.testing.assert_allclose(dirs.rotated_basis(s, 1.0, units), q[:, units].T, atol=1e-8)
    assert dirs.mean_abs_cosine_to_basis(dirs.rotated_basis(s, 0.0, units), units) == pytest.approx(
        1.0
    )


@pytest.mark.parametrize(
    "matrix",
    [np.array([[1.0, 1.0], [0.0, 1.0]]), np.diag([1.0, -1.0]), -np.eye(2), np.ones((2, 3))],
)
def test_rotation_generator_rejects_non_rotations_and_eigenvalue_minus_one(
    matrix: np.ndarray,
) -> None:
    with pytest.raises(InvalidInputError):
        dirs.rotation_generator(matrix)


def test_pca_recovers_known_axes_with_positive_skew() -> None:
    rng = np.random.default_rng(5)
    basis = dirs.haar_rotation(4, rng)
    # Independent coordinates with variances 16, 4, 1, 0.25; the first is skewed (exponential).
    z = np.column_stack(
        [
            4 * (rng.exponential(size=20000) - 1),
            *(s * rng.standard_normal(20000) for s in (2, 1, 0.5)),
        ]
    )
    phi = z @ basis.T + 3.0
    axes = dirs.pca_directions(phi, 2, centre=True)
    assert abs(axes[0] @ basis[:, 0]) > 0.999 and abs(axes[1] @ basis[:, 1]) > 0.99
    assert axes[0] @ basis[:, 0] > 0  # oriented along the long (positive) tail
    first_uncentred = dirs.pca_directions(phi, 1, centre=False)[0]
    mean_dir = phi.mean(axis=0) / np.linalg.norm(phi.mean(axis=0))
    assert abs(first_uncentred @ mean_dir) > 0.9


def test_classmean_directions_point_to_the_class_units() -> None:
    labels = np.repeat(np.arange(3), 50)
    phi = np.eye(3)[labels] + 0.01 * np.random.default_rng(6).standard_normal((150, 3))
    vectors, classes = dirs.classmean_directions(phi, labels)
    np.testing.assert_array_equal(classes, [0, 1, 2])
    assert np.all(np.argmax(vectors, axis=1) == [0, 1, 2])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_family_names_are_checked() -> None:
    assert dirs.check_family_names(["Natural", "random", "natural"]) == ["natural", "random"]
    with pytest.raises(InvalidInputError, match="unknown direction family 'diagonal'"):
        dirs.check_family_names(["diagonal"])
    with pytest.raises(InvalidInputError):
        dirs.random_sphere(0, 3, np.random.default_rng(0))
