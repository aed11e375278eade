"""The paper's baselines: Gaussian noise and amplified perturbations (Tables 2 and 4)."""

from __future__ import annotations

import pytest
import torch

from intriguing.attacks import amplify, gaussian_noise, rms_distortion
from intriguing.errors import InvalidInputError


def test_gaussian_noise_has_the_requested_stddev_away_from_the_bounds() -> None:
    x = torch.full((4, 1, 28, 28), 0.5)
    out = gaussian_noise(x, 0.05, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == x.shape
    torch.testing.assert_close(out.distortion, torch.full((4,), 0.05), rtol=0.05, atol=0)
    torch.testing.assert_close(out.distortion, rms_distortion(x, out.images))


def test_gaussian_noise_is_clipped_and_reports_the_achieved_value() -> None:
    x = torch.zeros(3, 4000)
    out = gaussian_noise(x, 1.0, generator=torch.Generator().manual_seed(1))
    assert float(out.images.min()) == 0.0 and float(out.images.max()) <= 1.0
    # from 0, negative noise is clipped away and positive noise capped at 1:
    # E[min(z, 1)^2; z > 0] = (Phi(1) - 1/2 - phi(1)) + (1 - Phi(1)) = 0.0993 + 0.1587 = 0.2580
    torch.testing.assert_close(out.distortion, torch.full((3,), 0.2580**0.5), rtol=0.03, atol=0)


def test_gaussian_noise_is_seeded_and_zero_noise_is_identity() -> None:
    x = torch.rand(2, 10)
    a = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(5)).images
    b = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(5)).images
    assert torch.equal(a, b)
    assert torch.equal(gaussian_noise(x, 0.0).images, x)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_gaussian_noise_rejects_bad_stddev(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="stddev"):
        gaussian_noise(torch.rand(2, 3), bad)


def test_amplify_rescales_to_the_target_rms() -> None:
    x = torch.full((3, 50), 0.5)
    delta = torch.randn(3, 50, generator=torch.Generator().manual_seed(2)) * 0.01
    out = amplify(x, x + delta, 0.1)
    torch.testing.assert_close(out.distortion, torch.full((3,), 0.1), rtol=1e-5, atol=0)
    # the direction is kept: amplified perturbation = 0.1 / rms * delta
    scale = 0.1 / rms_distortion(x, x + delta)
    torch.testing.assert_close(out.images - x, delta * scale[:, None], rtol=1e-4, atol=1e-6)


def test_amplify_clips_and_reports_less_than_asked() -> None:
    x = torch.tensor([[0.95, 0.5, 0.5, 0.5]])
    adv = torch.tensor([[1.0, 0.5, 0.5, 0.49]])
    out = amplify(x, adv, 0.2)
    assert float(out.images.max()) <= 1.0 and float(out.images.min()) >= 0.0
    assert float(out.images[0, 0]) == 1.0
    assert float(out.distortion[0]) < 0.2
    # hand-computed: rms(delta) = sqrt((0.05^2 + 0.01^2) / 4); the second entry is not clipped
    rms = ((0.05**2 + 0.01**2) / 4) ** 0.5
    expected_last = 0.5 - 0.01 * 0.2 / rms
    assert float(out.images[0, 3]) == pytest.approx(expected_last, rel=1e-5)


def test_amplify_errors() -> None:
    x = torch.rand(2, 4)
    with pytest.raises(InvalidInputError, match="cannot be amplified"):
        amplify(x, x.clone(), 0.1)
    with pytest.raises(InvalidInputError, match="differ in shape"):
        amplify(x, torch.rand(2, 5), 0.1)
    with pytest.raises(InvalidInputError, match=r"must lie in \[0, 1\]"):
        amplify(x, x + 2.0, 0.1)


def test_unclipped_noise_keeps_the_full_stddev() -> None:
    x = torch.zeros(3, 4000)
    free = gaussian_noise(x, 1.0, generator=torch.Generator().manual_seed(1), clip=False)
    clipped = gaussian_noise(x, 1.0, generator=torch.Generator().manual_seed(1))
    assert float(free.images.min()) < 0.0 and float(free.images.max()) > 1.0
    torch.testing.assert_close(free.distortion, torch.ones(3), rtol=0.03, atol=0)
    # same draw: clipping the unclipped images gives the clipped ones exactly
    assert torch.equal(free.images.clamp(0.0, 1.0), clipped.images)


def test_amplify_unclipped_reaches_the_target_rms_outside_the_box() -> None:
    x = torch.tensor([[0.95, 0.5, 0.5, 0.5]])
    adv = torch.tensor([[1.0, 0.5, 0.5, 0.49]])
    out = amplify(x, adv, 0.2, clip=False)
    assert float(out.distortion[0]) == pytest.approx(0.2, rel=1e-5)
    # hand-computed: the first entry moves by 0.05 * 0.2 / rms past the upper bound
    rms = ((0.05**2 + 0.01**2) / 4) ** 0.5
    assert float(out.images[0, 0]) == pytest.approx(0.95 + 0.05 * 0.2 / rms, rel=1e-5)
    assert float(out.images[0, 0]) > 1.0


def test_noise_and_amplify_leave_their_inputs_alone_and_match_the_formula() -> None:
    """Both work in their own buffers: the inputs are unchanged and the values are exactly
    ``x + stddev * N(0, 1)`` (same generator) and ``x + delta * stddev / rms``."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 5, 5, generator=g)
    adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)
    x_copy, adv_copy = x.clone(), adv.clone()
    noisy = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(9), clip=False)
    draw = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    assert torch.equal(noisy.images, x + 0.2 * draw)
    amplified = amplify(x, adv, 0.1, clip=False)
    scale = (0.1 / rms_distortion(x, adv)).view(-1, 1, 1, 1)
    assert torch.equal(amplified.images, x + (adv - x) * scale)
    assert torch.equal(x, x_copy) and torch.equal(adv, adv_copy)


def test_distortions_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measures are reduced in row chunks; every chunk size gives the whole-array values
    (worked by hand for one row: a 3-4 perturbation over 4 pixels has L2 5 and RMS 2.5)."""
    from intriguing.attacks import l2_distance, metrics

    g = torch.Generator().manual_seed(4)
    x = torch.rand(11, 1, 4, 4, generator=g)
    adv = torch.rand(11, 1, 4, 4, generator=g)
    whole_rms = (adv - x).flatten(1).double().pow(2).mean(1).sqrt().float()
    whole_l2 = (adv - x).flatten(1).double().pow(2).sum(1).sqrt().float()
    for chunk in (1, 3, 11, 64):
        monkeypatch.setattr(metrics, "DISTORTION_CHUNK", chunk)
        assert torch.equal(rms_distortion(x, adv), whole_rms)
        assert torch.equal(l2_distance(x, adv), whole_l2)
        assert torch.equal(rms_distortion(x[:1], adv), rms_distortion(x[:1].expand_as(adv), adv))
    zero = torch.zeros(1, 4)
    assert l2_distance(zero, torch.tensor([[3.0, 4.0, 0.0, 0.0]])).item() == 5.0
    assert rms_distortion(zero, torch.tensor([[3.0, 4.0, 0.0, 0.0]])).item() == 2.5


@pytest.mark.parametrize(
    ("originals", "adversarials", "message"),
    [
        (torch.zeros(3, 4), torch.zeros(2, 4), "differ in shape"),
        (torch.zeros(3, 4), torch.zeros(3, 5), "differ in shape"),
        (torch.zeros(4), torch.zeros(4), r"\(N, \.\.\.\) batches"),
    ],
)
def test_distortions_refuse_mismatched_shapes(
    originals: torch.Tensor, adversarials: torch.Tensor, message: str
) -> None:
    from intriguing.attacks import l2_distance

    for measure in (rms_distortion, l2_distance):
        with pytest.raises(InvalidInputError, match=message):
            measure(originals, adversarials)
