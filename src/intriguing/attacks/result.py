"""The structured result of an adversarial attack (paper section 4.1).

An :class:`AttackResult` holds one row per attacked image. Tensors live on the device of the attacked
images; :meth:`AttackResult.save` / :meth:`AttackResult.load` store them as safetensors plus a JSON
sidecar with the settings and the summary.

Failures are flagged, never hidden: ``success[i]`` is ``False`` and ``adversarial[i]`` is the attack's
best attempt (the final iterate at the smallest constant ``c`` tried, i.e. the most loss-weighted
attempt), with its real ``distortion``/``l2``; it is never silently the original image, and summary
statistics of distortion use successes only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from intriguing._io import atomic_write_bytes, atomic_write_text, file_sha256, loads_strict
from intriguing.attacks.metrics import median
from intriguing.errors import IntriguingError

_TENSOR_FIELDS = (
    "adversarial",
    "success",
    "distortion",
    "l2",
    "c",
    "iterations",
    "grad_evals",
    "labels",
    "predicted",
    "targets",
)

MODES = ("untargeted", "targeted")  # as intriguing.attacks.base.MODES (base imports this module)

# The sidecar's key for the SHA-256 of the tensor file's bytes: ties the pair written by one save.
HASH_KEY = "tensor_file_sha256"
# The sidecar's key for the SHA-256 of its own other entries (canonical JSON): seals the settings,
# mode and elapsed time, which the tensor file's hash does not cover.
SEAL_KEY = "sidecar_sha256"


def sidecar_seal(meta: dict[str, Any]) -> str:
    """SHA-256 of ``meta``'s entries other than :data:`SEAL_KEY`, as canonical strict JSON."""
    body = {key: value for key, value in meta.items() if key != SEAL_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class AttackResult:
    """Per-example outcome of an attack on ``N`` images.

    Attributes:
        adversarial: ``(N, *image_shape)`` float32 in [0, 1] exactly. For a failure: the best attempt.
        success: ``(N,)`` bool, re-verified by running the model on ``adversarial``: targeted
            ``argmax f(x') == targets``; untargeted ``argmax f(x') != labels``.
        distortion: ``(N,)`` float32, the paper's measure ``sqrt(sum (x'-x)^2 / n)`` with ``n`` the
            number of values per image (784 on MNIST): an RMS per pixel.
        l2: ``(N,)`` float32, ``||x' - x||_2`` (``= sqrt(n) * distortion``).
        c: ``(N,)`` float64, the constant (``c * ||r||^2 + loss``) of the search stage that found
            the returned example (L-BFGS then moves it toward the original along the segment, see
            ``LBFGS._shrink_along_rays``); NaN when the returned image comes from no optimisation
            (e.g. an image that was already adversarial).
        iterations: ``(N,)`` int64, L-BFGS iterations summed over all constants and targets tried.
        grad_evals: ``(N,)`` int64, model evaluations spent on the example (forward+backward;
            a forward pass without gradients counts as one too).
        labels: ``(N,)`` int64, the true (or given) labels of the originals.
        predicted: ``(N,)`` int64, ``argmax f(adversarial)``.
        targets: ``(N,)`` int64, the target label of the returned example; ``-1`` in untargeted mode.
        mode: ``"targeted"`` or ``"untargeted"``.
        elapsed_s: wall-clock seconds the attack took.
        settings: the attack's settings (JSON-serialisable).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    distortion: torch.Tensor
    l2: torch.Tensor
    c: torch.Tensor
    iterations: torch.Tensor
    grad_evals: torch.Tensor
    labels: torch.Tensor
    predicted: torch.Tensor
    targets: torch.Tensor
    mode: str
    elapsed_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.success.shape[0])

    @property
    def success_rate(self) -> float:
        """Share of examples attacked successfully (0 when there are none)."""
        return float(self.success.float().mean()) if len(self) else 0.0

    def summary(self) -> dict[str, Any]:
        """Headline figures: success rate, distortion over successes, throughput, cost per example.

        Returns a JSON-serialisable dict; distortion statistics are ``None`` without successes.
        """
        n = len(self)
        ok = self.success.bool()
        dist = self.distortion[ok].double()
        l2 = self.l2[ok].double()
        has = bool(ok.any())
        return {
            "mode": self.mode,
            "n": n,
            "successes": int(ok.sum()),
            "success_rate": self.success_rate,
            "mean_distortion": float(dist.mean()) if has else None,
            "median_distortion": median(dist) if has else None,
            "max_distortion": float(dist.max()) if has else None,
            "mean_l2": float(l2.mean()) if has else None,
            "elapsed_s": self.elapsed_s,
            "examples_per_s": n / self.elapsed_s if self.elapsed_s > 0 else None,
            "grad_evals_per_example": float(self.grad_evals.double().mean()) if n else 0.0,
            "iterations_per_example": float(self.iterations.double().mean()) if n else 0.0,
        }

    def to(self, device: torch.device | str) -> AttackResult:
        """A copy with every tensor on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        return AttackResult(
            **moved, mode=self.mode, elapsed_s=self.elapsed_s, settings=dict(self.settings)
        )

    def save(self, path: str | Path) -> Path:
        """Write the tensors to ``path`` (safetensors) and metadata to ``path`` + ``.json``, atomically.

        The result and its metadata are checked and serialised before anything is written, so a
        result that cannot be stored (or that :meth:`load` would refuse) leaves an earlier result at
        ``path`` untouched. The sidecar, written second, records the SHA-256 of the tensor file's
        bytes (``tensor_file_sha256``): a save killed between the two renames leaves a pair that
        :meth:`load` refuses; and it seals its own entries (``sidecar_sha256``), so edited settings
        are refused too. Returns the JSON sidecar's path.

        Raises:
            IntriguingError: a field of the wrong shape or dtype, values :meth:`load` refuses (NaN,
                pixels outside [0, 1], negative distortions, targets that do not fit ``mode``, ...),
                an unknown ``mode``, a non-finite or negative ``elapsed_s``, or ``settings`` that
                are not plain JSON (one line).
        """
        target = Path(path)
        sidecar = target.with_name(target.name + ".json")
        problem = _tensor_problem({name: getattr(self, name) for name in _TENSOR_FIELDS})
        if problem is None:
            problem = _meta_problem(self.mode, self.elapsed_s, self.settings)
        tensors: dict[str, torch.Tensor] = {}
        if problem is None:
            tensors = {
                name: getattr(self, name).detach().cpu().contiguous() for name in _TENSOR_FIELDS
            }
            problem = _content_problem(tensors, self.mode)
        if problem is not None:
            raise IntriguingError(f"{target}: cannot save the attack result: {problem}")
        meta = {
            "mode": self.mode,
            "elapsed_s": float(self.elapsed_s),
            "settings": self.settings,
            "summary": _json_safe(self.summary()),
        }
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise IntriguingError(
                f"{target}: cannot save the attack result: its metadata is not strict JSON ({exc})"
            ) from None
        data = safetensors_bytes(tensors)  # what save_file writes, without its own temporary
        meta[HASH_KEY] = hashlib.sha256(data).hexdigest()
        meta[SEAL_KEY] = sidecar_seal(meta)
        atomic_write_bytes(target, data)
        atomic_write_text(sidecar, json.dumps(meta, indent=2, allow_nan=False) + "\n")
        return sidecar

    @classmethod
    def load(cls, path: str | Path) -> AttackResult:
        """Read a result written by :meth:`save`; a missing or corrupt file raises IntriguingError.

        Checked in this order, each failure one line naming the file: the tensors (present, ``N``
        rows, their dtypes) and the sidecar (a JSON object with a known ``mode``, a finite
        ``elapsed_s`` >= 0 and a ``settings`` object); the sidecar's ``tensor_file_sha256`` (present,
        and equal to the SHA-256 of the tensor file: an edited file, or a tensor file and sidecar
        from two different saves, is refused); the values (see :func:`_content_problem`); the
        sidecar's ``summary`` against the tensors.
        """
        target = Path(path)
        sidecar = target.with_name(target.name + ".json")
        if not target.is_file() or not sidecar.is_file():
            raise IntriguingError(f"{target}: attack result or its .json sidecar not found")
        try:
            tensors = load_file(str(target))
            meta = loads_strict(sidecar.read_text(encoding="utf-8"))
        except Exception as exc:  # safetensors raises several types for corrupt files
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IntriguingError(
                f"{target}: corrupt attack result ({why}); rerun the attack"
            ) from None
        missing = [name for name in _TENSOR_FIELDS if name not in tensors]
        if missing:
            raise IntriguingError(
                f"{target}: attack result lacks {', '.join(missing)}; rerun the attack"
            )
        problem = _tensor_problem(tensors)
        if problem is None:
            if not isinstance(meta, dict):
                problem = f"its .json sidecar is a {type(meta).__name__}, not an object"
            else:
                problem = _meta_problem(
                    meta.get("mode"), meta.get("elapsed_s", 0.0), meta.get("settings", {})
                )
        if problem is not None:
            raise IntriguingError(f"{target}: corrupt attack result: {problem}; rerun the attack")
        recorded = meta.get(HASH_KEY)
        for key in (HASH_KEY, SEAL_KEY):
            if key not in meta:
                raise IntriguingError(
                    f"{target}: attack result without {key} in its .json sidecar (saved by an "
                    "older version of intriguing, or not by AttackResult.save); rerun the attack"
                )
        if recorded != file_sha256(target):
            raise IntriguingError(
                f"{target}: corrupt attack result: the file's SHA-256 differs from the "
                f"{HASH_KEY} in its .json sidecar (the file was edited, or it and the sidecar "
                "come from two different saves); rerun the attack"
            )
        if meta.get(SEAL_KEY) != sidecar_seal(meta):
            raise IntriguingError(
                f"{target}: corrupt attack result: its .json sidecar was edited after the save "
                f"(its {SEAL_KEY} does not match its settings, mode, elapsed_s and summary); "
                "rerun the attack"
            )
        mode = str(meta["mode"])
        problem = _content_problem(tensors, mode)
        result = cls(
            **{name: tensors[name] for name in _TENSOR_FIELDS},
            mode=mode,
            elapsed_s=float(meta.get("elapsed_s", 0.0)),
            settings=dict(meta.get("settings", {})),
        )
        if problem is None and "summary" in meta:
            problem = _summary_problem(meta["summary"], result)
        if problem is not None:
            raise IntriguingError(f"{target}: corrupt attack result: {problem}; rerun the attack")
        return result


# The dtype of each per-example field (``adversarial``: any floating dtype).
_DTYPES = {
    "success": (torch.bool,),
    "distortion": (torch.float32, torch.float64),
    "l2": (torch.float32, torch.float64),
    "c": (torch.float64, torch.float32),
    "iterations": (torch.int64,),
    "grad_evals": (torch.int64,),
    "labels": (torch.int64,),
    "predicted": (torch.int64,),
    "targets": (torch.int64,),
}


def _tensor_problem(tensors: dict[str, Any]) -> str | None:
    """Why the per-example fields do not form a result of ``N`` rows (one line), or None."""
    for name in _TENSOR_FIELDS:
        if not isinstance(tensors[name], torch.Tensor):
            return f"{name} is a {type(tensors[name]).__name__}, not a tensor"
    adversarial = tensors["adversarial"]
    if adversarial.ndim < 1 or not adversarial.is_floating_point():
        return f"adversarial must be floating images (N, ...), got {adversarial.dtype} {tuple(adversarial.shape)}"
    n = int(adversarial.shape[0])
    for name, dtypes in _DTYPES.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != (n,):
            return f"{name} has shape {tuple(tensor.shape)}, not ({n},) like the {n} adversarial images"
        if tensor.dtype not in dtypes:
            return f"{name} is {tensor.dtype}, not {dtypes[0]}"
    return None


def _count(mask: torch.Tensor) -> int:
    return int(mask.sum())


def _content_problem(tensors: dict[str, torch.Tensor], mode: str) -> str | None:
    """Why the values of well-formed per-example fields cannot come from an attack (one line), or
    None.

    Holds for every result an attack returns (``Attack._finalize``), whether or not it succeeded:
    ``adversarial`` finite and in [0, 1]; ``distortion`` and ``l2`` finite, >= 0 and at most what
    two images in [0, 1] can differ by (1, ``sqrt(values per image)``); ``c`` >= 0 or NaN (no
    optimisation); ``iterations``, ``grad_evals``, ``labels`` and ``predicted`` >= 0 (the number of
    classes is not stored); ``targets`` all -1 exactly in untargeted mode; every success predicted
    as other than its label (untargeted) or as its target (targeted). The originals are not
    stored, so distortions are checked for their ranges only.
    """
    adversarial = tensors["adversarial"].detach().cpu()
    n = int(adversarial.shape[0])
    bad = _count(~torch.isfinite(adversarial).reshape(n, -1).all(1)) if n else 0
    if bad:
        return f"adversarial has NaN or infinite pixels in {bad} image(s)"
    if adversarial.numel():
        low, high = float(adversarial.min()), float(adversarial.max())
        if low < 0.0 or high > 1.0:
            return f"adversarial pixels span [{low:.6g}, {high:.6g}], outside [0, 1]"
    values = adversarial[0].numel() if n else 1
    for name, bound in (("distortion", 1.0), ("l2", math.sqrt(values))):
        tensor = tensors[name].detach().cpu().double()
        if bad := _count(~torch.isfinite(tensor)):
            return f"{name} has {bad} NaN or infinite value(s)"
        if bad := _count(tensor < 0):
            return f"{name} has {bad} negative value(s)"
        if bad := _count(tensor > bound * (1.0 + 1e-5)):
            return (
                f"{name} has {bad} value(s) above {bound:.6g}, more than two images in [0, 1] "
                "can differ by"
            )
    if bad := _count(tensors["c"].detach().cpu() < 0):
        return f"c has {bad} negative value(s)"
    for name in ("iterations", "grad_evals", "labels", "predicted"):
        if bad := _count(tensors[name].detach().cpu() < 0):
            return f"{name} has {bad} negative value(s)"
    targets = tensors["targets"].detach().cpu()
    if mode == "untargeted" and (bad := _count(targets != -1)):
        return f"mode is untargeted but {bad} target(s) are not -1"
    if mode == "targeted" and (bad := _count(targets < 0)):
        return f"mode is targeted but {bad} target(s) are negative (-1 means untargeted)"
    success = tensors["success"].detach().cpu()
    predicted = tensors["predicted"].detach().cpu()
    if mode == "untargeted":
        bad = _count(success & (predicted == tensors["labels"].detach().cpu()))
        if bad:
            return f"{bad} success(es) predicted as their own label"
    elif bad := _count(success & (predicted != targets)):
        return f"{bad} success(es) not predicted as their target"
    return None


def _summary_problem(summary: object, result: AttackResult) -> str | None:
    """Why the sidecar's ``summary`` does not describe ``result`` (one line), or None."""
    if not isinstance(summary, dict):
        return f"the sidecar's summary is a {type(summary).__name__}, not an object"
    expected = _json_safe(result.summary())
    for key, want in expected.items():
        if key not in summary:
            continue
        got = summary[key]
        if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
            same = math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = type(got) is type(want) and got == want
        if not same:
            return f"the sidecar's summary says {key} = {got!r} but the tensors give {want!r}"
    return None


def _meta_problem(mode: object, elapsed_s: object, settings: object) -> str | None:
    """Why the metadata of a result is unusable (one line), or None."""
    if mode not in MODES:
        return f"mode is {mode!r}, not one of {', '.join(MODES)}"
    if (
        isinstance(elapsed_s, bool)
        or not isinstance(elapsed_s, int | float)
        or not math.isfinite(elapsed_s)
        or elapsed_s < 0
    ):
        return f"elapsed_s must be a finite number of seconds >= 0, got {elapsed_s!r}"
    if not isinstance(settings, dict):
        return f"settings must be a dict, got {type(settings).__name__}"
    bad = _not_json(settings, "settings")
    if bad is not None:
        return f"{bad}; settings take plain str, int, finite float, bool, None, lists and dicts"
    return None


def _not_json(value: object, where: str) -> str | None:
    """The first part of ``value`` that is not plain strict JSON, described in one line, or None."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            bad = _not_json(item, f"{where}[{i}]")
            if bad is not None:
                return bad
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key {key!r} that is not a str"
            bad = _not_json(item, f"{where}[{key!r}]")
            if bad is not None:
                return bad
        return None
    return f"{where} is a {type(value).__name__}"


def _json_safe(obj: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats by None so the dict is strict JSON."""
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in obj.items()
    }
