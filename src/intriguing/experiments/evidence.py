"""Steps that gather the evidence the claims are judged on (docs/claims.md), paired by design.

::

    paired/<split>/<m>    on the images attacked for m: which model misclassifies each adversarial
                          example, each Gaussian-noise image of every noise stddev of the table and,
                          for Table 4, each amplified example and Gaussian noise of the same stddev
                          (the same images, so McNemar's test applies); the distortion summary of
                          the successful examples, the range of the stored images (box check) and,
                          for a Figure 7 model, its accuracy under stddev-1 noise clipped and not
    reference/<split>     mean RMS distance between images of the split with different labels:
                          the yardstick for "tiny" distortions

Counts are stored as paired 2x2 tables (:class:`intriguing.analysis.stats.Paired`: ``a`` is the
first condition, ``b`` the second, ``a_only``/``b_only`` the discordant pairs). Images are float32
``(N, 1, 28, 28)`` in [0, 1]; distortion is the paper's RMS per pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from intriguing.analysis import stats
from intriguing.errors import IntriguingError
from intriguing.experiments import steps as st

if TYPE_CHECKING:
    from intriguing.experiments.graph import StepContext

REFERENCE_PAIRS = 20000


def _wrong(
    bench: st.Workbench, models: list[str], images: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """Per model, which images it misclassifies (bool ``(N,)`` arrays)."""
    return {m: (st.predict(bench.model(m), images) != labels).numpy() for m in models}


def _noise(images: torch.Tensor, stddev: float, seed: int, clip: bool) -> Any:
    from intriguing.attacks import gaussian_noise

    generator = torch.Generator().manual_seed(seed)
    return gaussian_noise(images, stddev, generator=generator, clip=clip)


def _versus(wrong_a: dict[str, Any], wrong_b: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per model, the paired table of "misclassified under a" vs "misclassified under b" from
    :func:`_wrong`'s flags."""
    return {m: stats.paired_counts(wrong_a[m], wrong_b[m]).to_dict() for m in wrong_a}


def _distortion(shards: list[dict[str, Any]]) -> dict[str, Any]:
    values = [d for s in shards for d, ok in zip(s["distortion"], s["success"], strict=True) if ok]
    return stats.summarise(values)


def paired_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Adversarial vs Gaussian noise (and amplified vs noise) on the same attacked images.

    Params: ``source``, ``split``, ``models`` (columns), ``summary``, ``shards`` (its attack steps),
    ``noise_stddevs``, ``amplify`` (stddev or None), ``clip``, ``seed`` and ``figure7_stddev``
    (None, or the stddev of Figure 7's noise for this source). Each noise draw is seeded from
    ``seed`` and its stddev, so the pairing is reproducible.
    """
    p = ctx.params
    summary = ctx.deps[str(p["summary"])]
    shards = [ctx.deps[k] for k in p["shards"]]
    adv, labels, success = st.load_adversarials(ctx.store.root, summary["artifacts"])
    originals = st._originals(bench, str(p["split"]), shards)
    if adv.shape != originals.shape:
        raise IntriguingError(f"{p['source']}: stored adversarials do not match their originals")
    models, seed, clip = list(p["models"]), int(p["seed"]), bool(p["clip"])
    out: dict[str, Any] = {
        "source": p["source"],
        "split": p["split"],
        "n": int(labels.shape[0]),
        "distortion": _distortion(shards),
        "box": {
            "min": float(adv.min()) if adv.numel() else None,
            "max": float(adv.max()) if adv.numel() else None,
        },
        "noise": [],
        "amplified": None,
        "figure7": None,
    }
    adv_wrong = _wrong(bench, models, adv, labels) if p["noise_stddevs"] else {}
    for stddev in p["noise_stddevs"]:
        noisy = _noise(originals, float(stddev), st.derived_seed(seed, "paired", stddev), clip)
        out["noise"].append(
            {
                "stddev": stddev,
                "clipped": clip,
                "achieved_distortion": float(noisy.distortion.double().mean()),
                "cells": _versus(adv_wrong, _wrong(bench, models, noisy.images, labels)),
            }
        )
    if p["amplify"] is not None:
        out["amplified"] = _amplified(bench, p, adv, originals, labels, success, seed)
    if p["figure7_stddev"] is not None:
        out["figure7"] = _figure7(bench, p, adv, originals, labels, seed)
    return out


def _amplified(
    bench: st.Workbench,
    p: Any,
    adv: torch.Tensor,
    originals: torch.Tensor,
    labels: torch.Tensor,
    success: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    """Amplified examples vs Gaussian noise of the same stddev on the same (amplifiable) images."""
    from intriguing.attacks import amplify

    moved = (adv - originals).flatten(1).abs().amax(1) > 0
    keep = success & moved
    stddev, clip = float(p["amplify"]), bool(p["clip"])
    if not bool(keep.any()):
        return {"stddev": stddev, "clipped": clip, "n": 0, "cells": {}}
    amplified = amplify(originals[keep], adv[keep], stddev, clip=clip)
    noisy = _noise(originals[keep], stddev, st.derived_seed(seed, "paired-amplified", stddev), clip)
    return {
        "stddev": stddev,
        "clipped": clip,
        "n": int(keep.sum()),
        "amplified_distortion": float(amplified.distortion.double().mean()),
        "noise_distortion": float(noisy.distortion.double().mean()),
        "cells": _versus(
            _wrong(bench, list(p["models"]), amplified.images, labels[keep]),
            _wrong(bench, list(p["models"]), noisy.images, labels[keep]),
        ),
    }


def _figure7(
    bench: st.Workbench,
    p: Any,
    adv: torch.Tensor,
    originals: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    """The source's accuracy under Figure 7's noise (clipped and not) vs under its adversarials.

    Paired on the attacked images (``a``: correct under noise, ``b``: correct on the adversarial
    example); also the accuracy under the noise on the first ``figure7_examples`` test images,
    the paper's setting for its 51%.
    """
    model, stddev = bench.model(str(p["source"])), float(p["figure7_stddev"])
    adv_correct = (st.predict(model, adv) == labels).numpy()
    test_x, test_y = bench.data.split("test")
    n_test = int(p["figure7_examples"])
    test_x, test_y = test_x[:n_test], test_y[:n_test]
    out: dict[str, Any] = {"stddev": stddev, "n": int(labels.shape[0])}
    for clip in (False, True):
        noisy = _noise(originals, stddev, st.derived_seed(seed, "paired-figure7", stddev), clip)
        noise_correct = (st.predict(model, noisy.images) == labels).numpy()
        on_test = _noise(test_x, stddev, st.derived_seed(seed, "figure7-test", stddev), clip)
        correct_test = int((st.predict(model, on_test.images) == test_y).sum())
        out["clipped" if clip else "unclipped"] = {
            "achieved_distortion": float(noisy.distortion.double().mean()),
            "paired": stats.paired_counts(noise_correct, adv_correct).to_dict(),
            "test": {"n": int(test_y.shape[0]), "correct": correct_test},
        }
    return out


def reference_step(bench: st.Workbench, ctx: StepContext) -> dict[str, Any]:
    """Mean RMS distance between ``n_pairs`` random image pairs of ``split`` with different labels.

    Pairs are drawn uniformly with replacement (seeded), pairs with equal labels are dropped; the
    result has ``n`` (pairs kept), ``mean``, ``sd`` of the per-pair RMS distance.
    """
    p = ctx.params
    images, labels = bench.data.split(str(p["split"]))
    if labels.shape[0] < 2:
        raise IntriguingError(f"split {p['split']!r} has fewer than 2 images")
    generator = torch.Generator().manual_seed(int(p["seed"]))
    n = int(p["n_pairs"])
    i = torch.randint(0, labels.shape[0], (n,), generator=generator)
    j = torch.randint(0, labels.shape[0], (n,), generator=generator)
    keep = labels[i] != labels[j]
    flat = images.flatten(1)
    rms = ((flat[i[keep]] - flat[j[keep]]).double() ** 2).mean(1).sqrt()
    return {"split": p["split"], **stats.summarise(rms.numpy())}
