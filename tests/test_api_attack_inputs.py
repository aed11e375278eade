"""Input validation of the Python API: attack results on disk, attacks, data and model helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from intriguing.attacks import LBFGS, AttackResult, exact_linear_attack
from intriguing.attacks.fgm import fgm_l2
from intriguing.errors import IntriguingError, InvalidInputError
from intriguing.inputs import choose_examples, finish_model, open_data, resolve_model
from intriguing.models import get_entry, register_model, unregister_model
from intriguing.models.registry import ZooEntry
from intriguing.training.api import check_seed, probe_mnist_input, train_model


def _result(n: int = 3, *, elapsed: float = 1.0, settings: Any = None) -> AttackResult:
    return AttackResult(
        adversarial=torch.rand(n, 4),
        success=torch.ones(n, dtype=torch.bool),
        distortion=torch.rand(n),
        l2=torch.rand(n),
        c=torch.ones(n, dtype=torch.float64),
        iterations=torch.zeros(n, dtype=torch.long),
        grad_evals=torch.zeros(n, dtype=torch.long),
        labels=torch.zeros(n, dtype=torch.long),
        predicted=torch.ones(n, dtype=torch.long),
        targets=torch.full((n,), -1),
        mode="untargeted",
        elapsed_s=elapsed,
        settings={"attack": "old"} if settings is None else settings,
    )


def _mlp(d: int = 8, k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k)).eval()


# ------------------------------------------------------------------------- 1. AttackResult.save
@pytest.mark.parametrize(
    ("elapsed", "settings"),
    [
        (float("nan"), {"attack": "new"}),
        (1.0, {"x": float("nan")}),
        (1.0, {"x": np.float32(1.0)}),
        (1.0, {"x": torch.ones(2)}),
    ],
    ids=["nan-elapsed", "nan-setting", "numpy-setting", "tensor-setting"],
)
def test_save_refuses_bad_metadata_and_keeps_the_old_result(
    tmp_path: Path, elapsed: float, settings: dict[str, Any]
) -> None:
    path = tmp_path / "r.safetensors"
    _result(2).save(path)
    with pytest.raises(IntriguingError, match="cannot save the attack result") as info:
        _result(5, elapsed=elapsed, settings=settings).save(path)
    assert "\n" not in str(info.value)
    back = AttackResult.load(path)
    assert len(back) == 2 and back.settings == {"attack": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.safetensors", "r.safetensors.json"]


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    result = _result(3, settings={"attack": "LBFGS", "target": None, "seeds": [1, 2]})
    result.save(tmp_path / "r.safetensors")
    back = AttackResult.load(tmp_path / "r.safetensors")
    assert back.settings == result.settings and back.mode == "untargeted"
    assert torch.equal(back.adversarial, result.adversarial)


# ------------------------------------------------------------------------- 2. AttackResult.load
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("success", torch.full((5,), 5, dtype=torch.long)),
        ("success", torch.ones(3, dtype=torch.long)),
        ("labels", torch.zeros(3)),
        ("distortion", torch.zeros(3, 2)),
    ],
    ids=["success-length", "success-dtype", "labels-float", "distortion-2d"],
)
def test_load_refuses_tampered_tensors(tmp_path: Path, field: str, value: torch.Tensor) -> None:
    path = tmp_path / "r.safetensors"
    _result(3).save(path)
    save_file({**load_file(path), field: value}, path)
    with pytest.raises(IntriguingError, match=f"corrupt attack result: {field}"):
        AttackResult.load(path)


@pytest.mark.parametrize(
    ("sidecar", "match"),
    [
        ([1, 2], "not an object"),
        ({"mode": "untargeted", "settings": "abc"}, "settings must be a dict"),
        ({"mode": "untargeted", "elapsed_s": "x"}, "elapsed_s"),
        ({"mode": "untargeted", "elapsed_s": -1.0}, "elapsed_s"),
        ({"mode": "bogus"}, "mode is 'bogus'"),
        ({"settings": {}}, "mode is None"),
    ],
    ids=["list", "settings-str", "elapsed-str", "elapsed-negative", "mode-bogus", "no-mode"],
)
def test_load_refuses_tampered_sidecars(tmp_path: Path, sidecar: Any, match: str) -> None:
    path = tmp_path / "r.safetensors"
    _result(3).save(path)
    (tmp_path / "r.safetensors.json").write_text(json.dumps(sidecar))
    with pytest.raises(IntriguingError, match=match) as info:
        AttackResult.load(path)
    assert "corrupt attack result" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ 3. choose_examples / take
@pytest.fixture
def tensor_data(tmp_path: Path) -> Any:
    x = torch.rand(7, 1, 28, 28)
    file = tmp_path / "d.npz"
    np.savez(file, images=x.numpy(), labels=np.zeros(7, dtype=np.int64))
    return open_data(tensors=file)


@pytest.mark.parametrize("n", [-2, 0, 2.5, True], ids=["negative", "zero", "float", "bool"])
def test_choose_examples_and_take_refuse_bad_counts(tensor_data: Any, n: Any) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    with pytest.raises(InvalidInputError, match="n must be an integer >= 1"):
        choose_examples(model, tensor_data, n, correct_only=False)
    with pytest.raises(InvalidInputError, match="n must be an integer >= 1"):
        tensor_data.take(n)


def test_choose_examples_refuses_a_zero_chunk(tensor_data: Any) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    with pytest.raises(InvalidInputError, match="chunk must be an integer >= 1"):
        choose_examples(model, tensor_data, 2, chunk=0)
    assert len(choose_examples(model, tensor_data, 2, correct_only=False, chunk=3)[0]) == 2
    assert len(tensor_data.take(None)[0]) == 7 and len(tensor_data.take(7)[0]) == 7
    with pytest.raises(InvalidInputError, match=r"only 7 images in .*d\.npz; lower n \(--n\) to"):
        tensor_data.take(9)  # it drew 7 without a word (figure5 --n 9)


def test_open_data_refuses_a_split_with_tensors(tmp_path: Path) -> None:
    file = tmp_path / "d.npz"
    np.savez(file, images=np.random.rand(3, 1, 4, 4).astype("float32"))
    with pytest.raises(InvalidInputError, match=r"split='p1'.*--tensors"):
        open_data(tensors=file, split="p1")


# ---------------------------------------------------------------------- 4. exact_linear_attack
def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(3, 8)
    return lin, x, lin(x).argmax(1)


@pytest.mark.parametrize("margin", [-100.0, float("nan"), float("inf")], ids=["neg", "nan", "inf"])
def test_exact_linear_refuses_bad_margins(margin: float) -> None:
    lin, x, y = _linear()
    with pytest.raises(InvalidInputError, match="margin must be a finite number >= 0"):
        exact_linear_attack(lin, x, y, margin=margin, progress=False)


def test_exact_linear_refuses_list_labels_and_targets_equal_to_labels() -> None:
    lin, x, y = _linear()
    with pytest.raises(InvalidInputError, match=r"labels must be an integer torch.Tensor"):
        exact_linear_attack(lin, x, y.tolist(), progress=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="equal their label"):
        exact_linear_attack(lin, x, y, targets=y, progress=False)


def test_exact_linear_runs_a_float64_model_like_its_float32_twin() -> None:
    lin, x, y = _linear()
    targets = (y + 1) % 3
    single = exact_linear_attack(lin, x, targets=targets, progress=False)
    double = exact_linear_attack(lin.double(), x, targets=targets, progress=False)
    assert torch.equal(single.feasible, double.feasible)
    assert torch.allclose(single.distortion, double.distortion, equal_nan=True)


# ------------------------------------------------------------------------------------ 5. fgm_l2
@pytest.mark.parametrize("epsilon", [float("nan"), -0.1, float("inf")], ids=["nan", "neg", "inf"])
def test_fgm_refuses_bad_epsilon(epsilon: float) -> None:
    m, x = _mlp(), torch.rand(3, 8)
    with pytest.raises(InvalidInputError, match="epsilon must be a finite number >= 0"):
        fgm_l2(m, x, m(x).argmax(1), epsilon)


def test_fgm_refuses_bad_labels() -> None:
    m, x = _mlp(), torch.rand(3, 8)
    with pytest.raises(InvalidInputError, match="must be < 3"):
        fgm_l2(m, x, torch.tensor([0, 1, 7]), 0.1)
    with pytest.raises(InvalidInputError, match=r"torch.Tensor, got list"):
        fgm_l2(m, x, [0, 1, 2], 0.1)  # type: ignore[arg-type]


def test_fgm_runs_a_float64_model_and_returns_the_inputs_dtype() -> None:
    x = torch.rand(3, 8)
    single, double = _mlp(), _mlp().double()
    y = single(x).argmax(1)
    a, b = fgm_l2(single, x, y, 0.1), fgm_l2(double, x, y, 0.1)
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------- 6. register_model
def _tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "api-a", "aliases": "pb2"}, "aliases must be a list"),
        ({"name": 5}, "non-blank string"),
        ({"name": ""}, "non-blank string"),
        ({"name": "  "}, "non-blank string"),
        ({"name": "api-b", "factory": 5}, "factory must be a callable"),
        ({"name": "api-c", "train_config": {"optimizer": "adam"}}, "must be a TrainConfig"),
        ({"name": "api-d", "paper": [1, 2]}, "paper must be a dict"),
        ({"name": "api-e", "aliases": ["ok", " "]}, "every alias"),
    ],
    ids=[
        "alias-str",
        "name-int",
        "name-empty",
        "name-blank",
        "factory",
        "config",
        "paper",
        "alias",
    ],
)
def test_register_model_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"factory": _tiny, "description": "x"} | kwargs
    name: Any = args.pop("name")
    with pytest.raises(InvalidInputError, match=match):
        register_model(name, **args)
    with pytest.raises(IntriguingError):
        get_entry(str(name) if str(name).strip() else "api-none")


# ------------------------------------------------------------------ 7. ZooEntry.build, training
def _boom() -> nn.Module:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("factory", "match"),
    [(_boom, "its factory raised RuntimeError: boom"), (lambda: 5, "its factory returned int")],
    ids=["raises", "returns-int"],
)
def test_zoo_entry_build_reports_factory_failures(factory: Any, match: str) -> None:
    entry = ZooEntry(name="api-f", description="x", factory=factory)
    with pytest.raises(InvalidInputError, match=f"model 'api-f': {match}"):
        entry.build()


def test_probe_refuses_a_model_that_does_not_fit_mnist() -> None:
    with pytest.raises(InvalidInputError, match="model 'api-g' fails on one MNIST image"):
        probe_mnist_input(nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), "api-g")
    with pytest.raises(InvalidInputError, match=r"returned shape \(1, 3\)"):
        probe_mnist_input(nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), "api-g")
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout()).train()
    probe_mnist_input(model, "api-g")
    assert all(module.training for module in model.modules())  # modes restored


def test_train_model_refuses_a_wrong_input_size_before_training() -> None:
    register_model(
        "api-h", lambda: nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), description="x"
    )
    try:
        with pytest.raises(InvalidInputError, match="model 'api-h' fails on one MNIST image"):
            train_model("api-h", dataset="mnist-5k", data_dir="/nonexistent")
    finally:
        unregister_model("api-h")


@pytest.mark.parametrize(
    "seed", [1.5, -1, True, 2**32], ids=["float", "negative", "bool", "repeats-seed-0"]
)
def test_train_model_refuses_bad_seeds(seed: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"seed must be an integer in \[0, 4294967295\]"):
        train_model("softmax1", dataset="mnist-5k", seed=seed)
    with pytest.raises(InvalidInputError):
        check_seed(seed)


# ------------------------------------------------------------------- 8. meta device, LBFGS kwargs
def test_attack_refuses_a_meta_model() -> None:
    with pytest.raises(InvalidInputError, match=r"no data \(meta device, e\.g\. 1\.weight\)"):
        LBFGS()(_mlp().to("meta"), torch.rand(2, 8))


@pytest.mark.parametrize("which", ["images", "labels", "targets"])
def test_attack_refuses_meta_tensors_in_one_line(which: str) -> None:
    model = _mlp()
    images = torch.rand(3, 8)
    labels = model(images).argmax(1)
    targets = (labels + 1) % 3
    given = {"images": images, "labels": labels, "targets": targets}
    given[which] = given[which].to("meta")
    attack = LBFGS(mode="targeted") if which == "targets" else LBFGS()
    rest = {"targets": given["targets"]} if which == "targets" else {}
    with pytest.raises(InvalidInputError, match=rf"^{which} are on the meta device") as info:
        attack(model, given["images"], given["labels"], **rest)
    assert "\n" not in str(info.value)


def test_lbfgs_refuses_unknown_settings_in_one_line() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown LBFGS setting.*'nonsense'.*max_iter"):
        LBFGS(nonsense=1)


# ------------------------------------------------------------ 9. resolve_model / finish_model
def test_resolve_model_refuses_a_module() -> None:
    with pytest.raises(InvalidInputError, match="pass the module directly") as info:
        resolve_model(_mlp())  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("preprocessing", "match"),
    [
        ((0.1, 0.3), "mean must be a sequence"),
        (([0.1],), "pair, got a tuple of length 1"),
        (([0.1], ["a"]), "std must hold numbers"),
        (5, "pair, got a int"),
    ],
    ids=["scalars", "one", "text", "int"],
)
def test_finish_model_refuses_bad_preprocessing(preprocessing: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        finish_model(_mlp(784, 10), preprocessing=preprocessing)


def test_finish_model_accepts_pairs_and_text() -> None:
    x = torch.rand(2, 1, 28, 28)
    a = finish_model(_mlp(784, 10), preprocessing=([0.1307], [0.3081]))
    b = finish_model(_mlp(784, 10), preprocessing="0.1307,0.3081")
    assert torch.equal(a(x), b(x))


# ------------------------------------------------------------- stochastic models and NaN logits
class AlwaysDropout(nn.Module):
    """``F.dropout(x, p)`` whose ``training`` defaults to True: random in eval mode too."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.fc = p, nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.dropout(x.flatten(1), self.p))


class BatchStatistics(nn.Module):
    """Normalises with the batch's own statistics: an image's logits depend on its batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc((x - x.mean(0)) * 10)


@pytest.mark.parametrize(
    "model",
    [AlwaysDropout(0.3), AlwaysDropout(0.05), BatchStatistics()],
    ids=["dropout-0.3", "dropout-0.05", "batch-statistics"],
)
def test_a_model_whose_logits_change_between_passes_is_refused_before_the_attack(
    model: nn.Module,
) -> None:
    """Before: 375 evaluations per example, then 'numerical tie' warnings and 0% success."""
    torch.manual_seed(0)
    images = torch.rand(4, 64)
    with pytest.raises(InvalidInputError, match="different logits for the same image"):
        LBFGS()(model.eval(), images, torch.zeros(4, dtype=torch.long))
    from intriguing.inputs import check_model_input

    with pytest.raises(InvalidInputError, match=r"F\.dropout\(x, p\) without training"):
        check_model_input(model.eval(), images)


def test_a_deterministic_model_passes_the_same_logits_check() -> None:
    from intriguing.attacks.checks import check_same_logits
    from intriguing.inputs import check_model_input

    model = _mlp()
    check_model_input(model, torch.rand(2, 8))
    logits = torch.tensor([30.0, -2.0, 1.0])
    check_same_logits(logits, logits + 0.29)  # within 1% of the largest |logit|
    with pytest.raises(InvalidInputError, match=r"largest change 0\.31"):
        check_same_logits(logits, logits - 0.31)


class NanForBright(nn.Module):
    """NaN logits where the first pixel is above 0.5: argmax read them as class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        z = self.fc(x)
        return torch.where(x[:, :1] > 0.5, torch.full_like(z, float("nan")), z)


def test_predictions_refuse_nan_logits_instead_of_reading_them_as_class_0() -> None:
    from intriguing.models.user import predict

    images = torch.zeros(6, 8)
    images[4, 0] = 1.0
    with pytest.raises(InvalidInputError, match=r"NaN or inf logits for image 4 \(0-based\)"):
        predict(NanForBright().eval(), images, batch_size=4)
    with pytest.raises(InvalidInputError, match=r"for image 104 \(0-based\) and 0 more"):
        predict(NanForBright().eval(), images, batch_size=4, offset=100)
    assert predict(NanForBright().eval(), images[:4]).tolist() == [
        int(v) for v in NanForBright().eval()(images[:4]).argmax(1)
    ]


def test_outputs_in_the_unit_interval_are_warned_about() -> None:
    """A final sigmoid gave 2-7x the distortions of the same model's scores (with no word)."""
    import warnings

    from intriguing.attacks.checks import AttackWarning

    scores = _mlp(8, 3)
    sigmoid = nn.Sequential(scores, nn.Sigmoid()).eval()
    images = torch.rand(3, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(AttackWarning, match=r"every model output lies in \[0, 1\]"):
        LBFGS(max_iter=2, search_steps=1)(sigmoid, images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        LBFGS(max_iter=2, search_steps=1)(scores, images)


# ------------------------------------- 10. AttackResult.load refuses tampered or mixed results
# The sidecar records the SHA-256 of the tensor file's bytes (written after the tensor file), so an
# edited tensor file, or a tensor file and sidecar from two saves (a kill between the two renames),
# is refused; the values and the sidecar's summary are checked too ("resealed" edits below
# recompute the hash so that each of those checks is shown to fire on its own).
def _saved_attack(tmp_path: Path) -> tuple[Path, AttackResult]:
    import warnings

    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = LBFGS(max_iter=2, search_steps=1)(model, torch.rand(3, 8))
    assert bool(result.success.all()) and len(result) == 3
    path = tmp_path / "r.safetensors"
    result.save(path)
    return path, result


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _reseal(path: Path, meta: dict[str, Any] | None = None) -> None:
    """Write ``meta`` (default: the sidecar as it is) with both hashes recomputed, as a forger would."""
    from intriguing._io import file_sha256
    from intriguing.attacks.result import sidecar_seal

    meta = json.loads(_sidecar(path).read_text()) if meta is None else meta
    meta["tensor_file_sha256"] = file_sha256(path)
    meta["sidecar_sha256"] = sidecar_seal(meta)
    _sidecar(path).write_text(json.dumps(meta))


def _load_error(path: Path, match: str) -> str:
    with pytest.raises(IntriguingError, match=match) as info:
        AttackResult.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "rerun the attack" in message
    return message


def _scale_distortion(t: dict[str, torch.Tensor]) -> None:
    t["distortion"] *= 10


def _double_distortion(t: dict[str, torch.Tensor]) -> None:
    t["distortion"] *= 2  # still within [0, 1]: only the summary tells


def _clear_success(t: dict[str, torch.Tensor]) -> None:
    t["success"][:] = False


def _nan_pixel(t: dict[str, torch.Tensor]) -> None:
    t["adversarial"][0, 0] = float("nan")


def _inf_distortion(t: dict[str, torch.Tensor]) -> None:
    t["distortion"][1] = float("inf")


def _pixels_times_5(t: dict[str, torch.Tensor]) -> None:
    t["adversarial"] *= 5


def _label_77(t: dict[str, torch.Tensor]) -> None:
    t["labels"][0] = 77


def _label_negative(t: dict[str, torch.Tensor]) -> None:
    t["labels"][0] = -3


def _predicted_is_label(t: dict[str, torch.Tensor]) -> None:
    t["predicted"][2] = t["labels"][2]


def _targets_set(t: dict[str, torch.Tensor]) -> None:
    t["targets"][:] = 1


def _negative_l2(t: dict[str, torch.Tensor]) -> None:
    t["l2"][0] = -0.5


def _negative_c(t: dict[str, torch.Tensor]) -> None:
    t["c"][0] = -1.0


_TENSOR_EDITS = {
    "distortion-x10": (_scale_distortion, r"distortion has 2 value\(s\) above 1"),
    "distortion-x2": (_double_distortion, r"the sidecar's summary says mean_distortion = "),
    "success-cleared": (
        _clear_success,
        "the sidecar's summary says successes = 3 but the tensors give 0",
    ),
    "nan-pixel": (_nan_pixel, r"adversarial has NaN or infinite pixels in 1 image"),
    "inf-distortion": (_inf_distortion, r"distortion has 1 NaN or infinite value"),
    "pixels-x5": (_pixels_times_5, r"adversarial pixels span \[.*, 4\.9.*\], outside \[0, 1\]"),
    "label-77": (_label_77, None),  # the number of classes is not stored: only the hash sees it
    "label-negative": (_label_negative, r"labels has 1 negative value"),
    "predicted-is-label": (_predicted_is_label, r"1 success\(es\) predicted as their own label"),
    "targets-set": (_targets_set, r"mode is untargeted but 3 target\(s\) are not -1"),
    "l2-negative": (_negative_l2, r"l2 has 1 negative value"),
    "c-negative": (_negative_c, r"c has 1 negative value"),
}


@pytest.mark.parametrize("edit", list(_TENSOR_EDITS), ids=list(_TENSOR_EDITS))
def test_load_refuses_an_edited_tensor_file_by_its_hash(tmp_path: Path, edit: str) -> None:
    path, _ = _saved_attack(tmp_path)
    tensors = load_file(path)
    _TENSOR_EDITS[edit][0](tensors)
    save_file(tensors, path)
    _load_error(path, r"corrupt attack result: the file's SHA-256 differs from the tensor_file")


@pytest.mark.parametrize(
    "edit", [k for k, v in _TENSOR_EDITS.items() if v[1]], ids=lambda k: f"resealed-{k}"
)
def test_load_refuses_inconsistent_values_even_with_a_matching_hash(
    tmp_path: Path, edit: str
) -> None:
    path, _ = _saved_attack(tmp_path)
    tensors = load_file(path)
    change, match = _TENSOR_EDITS[edit]
    change(tensors)
    save_file(tensors, path)
    _reseal(path)
    assert match is not None
    _load_error(path, f"corrupt attack result: {match}")


def test_load_refuses_one_flipped_byte(tmp_path: Path) -> None:
    path, _ = _saved_attack(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    _load_error(path, r"SHA-256 differs from the tensor_file_sha256 in its \.json sidecar")


_SIDECAR_EDITS = {
    "mode-targeted": ({"mode": "targeted"}, r"mode is targeted but 3 target\(s\) are negative"),
    "summary-n": ({"summary": {"n": 99}}, r"summary says n = 99 but the tensors give 3"),
    "summary-distortion": (
        {"summary": {"mean_distortion": 0.5}},
        r"summary says mean_distortion = 0\.5 but",
    ),
    "summary-mode": ({"summary": {"mode": "targeted"}}, r"summary says mode = 'targeted' but"),
    "summary-list": ({"summary": [1]}, r"summary is a list, not an object"),
    "settings-edited": ({"settings": {"max_iter": 1000}}, None),  # only the seal sees it
    "settings-emptied": ({"settings": {}}, None),
    "elapsed-edited": ({"elapsed_s": 123.0}, None),
}


def _edited_sidecar(path: Path, key: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(_sidecar(path).read_text())
    for field, value in _SIDECAR_EDITS[key][0].items():
        merge = isinstance(value, dict) and value and isinstance(meta[field], dict)
        meta[field] = {**meta[field], **value} if merge else value
    return meta


@pytest.mark.parametrize("edit", list(_SIDECAR_EDITS), ids=list(_SIDECAR_EDITS))
def test_load_refuses_an_edited_sidecar_by_its_seal(tmp_path: Path, edit: str) -> None:
    path, _ = _saved_attack(tmp_path)
    meta = _edited_sidecar(path, edit)
    assert meta != json.loads(_sidecar(path).read_text())
    _sidecar(path).write_text(json.dumps(meta))
    _load_error(path, r"corrupt attack result: its \.json sidecar was edited after the save")


@pytest.mark.parametrize(
    "edit", [k for k, v in _SIDECAR_EDITS.items() if v[1]], ids=lambda k: f"resealed-{k}"
)
def test_load_refuses_an_inconsistent_sidecar_even_when_resealed(tmp_path: Path, edit: str) -> None:
    path, _ = _saved_attack(tmp_path)
    meta = _edited_sidecar(path, edit)
    _reseal(path, meta)
    match = _SIDECAR_EDITS[edit][1]
    assert match is not None
    prefix = "the sidecar's " if "summary" in _SIDECAR_EDITS[edit][0] else ""
    _load_error(path, f"corrupt attack result: {prefix}{match}")


def test_load_refuses_a_sidecar_without_the_seal(tmp_path: Path) -> None:
    path, _ = _saved_attack(tmp_path)
    meta = json.loads(_sidecar(path).read_text())
    del meta["sidecar_sha256"]
    _sidecar(path).write_text(json.dumps(meta))
    _load_error(path, r"without sidecar_sha256 in its \.json sidecar \(saved by an older version")


def test_load_refuses_a_sidecar_without_the_hash(tmp_path: Path) -> None:
    path, _ = _saved_attack(tmp_path)
    meta = json.loads(_sidecar(path).read_text())
    del meta["tensor_file_sha256"]
    _sidecar(path).write_text(json.dumps(meta))
    _load_error(path, r"saved by an older version of intriguing, or not by AttackResult\.save")


def test_load_refuses_a_pair_from_two_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save killed between its two renames leaves the new tensors with the old sidecar."""
    import intriguing.attacks.result as result_module

    path, first = _saved_attack(tmp_path)
    old_sidecar = _sidecar(path).read_text()

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # stands for a SIGKILL right after the tensor file's rename

    monkeypatch.setattr(result_module, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        _result(7).save(path)
    assert _sidecar(path).read_text() == old_sidecar and len(load_file(path)["success"]) == 7
    _load_error(path, r"come from two different saves")
    # the same mix made by hand: the first save's tensors with another save's sidecar
    monkeypatch.undo()
    other = tmp_path / "other.safetensors"
    first.save(path)
    _result(3).save(other)
    _sidecar(path).write_text(_sidecar(other).read_text())
    _load_error(path, r"come from two different saves")


def test_save_refuses_values_load_would_refuse_and_keeps_the_old_result(tmp_path: Path) -> None:
    path, _ = _saved_attack(tmp_path)
    before = path.read_bytes(), _sidecar(path).read_text()
    bad = _result(3)
    bad.distortion[1] = float("nan")
    with pytest.raises(
        IntriguingError, match=r"cannot save the attack result: distortion has 1 NaN"
    ):
        bad.save(path)
    assert (path.read_bytes(), _sidecar(path).read_text()) == before


def test_untampered_attack_result_round_trips_exactly(tmp_path: Path) -> None:
    from intriguing._io import file_sha256

    path, result = _saved_attack(tmp_path)
    meta = json.loads(_sidecar(path).read_text())
    assert meta["tensor_file_sha256"] == file_sha256(path)
    back = AttackResult.load(path)
    tensors = [n for n, v in vars(result).items() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 10  # every per-example field
    for name in tensors:
        mine, theirs = getattr(back, name), getattr(result, name)
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), name
    assert (back.mode, back.elapsed_s, back.settings) == (
        result.mode,
        result.elapsed_s,
        result.settings,
    )
    assert back.summary() == result.summary()


@pytest.mark.parametrize(
    ("n", "labels", "batch_size", "message"),
    [
        (-1, None, 2048, "n must be an integer >= 1"),  # kept all but the last correct example
        (0, None, 2048, "n must be an integer >= 1"),
        (2.5, None, 2048, "n must be an integer >= 1"),
        (2, "column", 2048, r"labels must have shape \(6,\)"),  # broadcast into 18 "examples"
        (2, "float", 2048, "integer class indices"),
        (2, None, 0, "batch_size must be an integer >= 1"),
    ],
)
def test_select_correct_refuses_what_it_cannot_use(
    n: Any, labels: str | None, batch_size: int, message: str
) -> None:
    from intriguing.models.user import select_correct

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.rand(6, 1, 2, 2)
    with torch.no_grad():
        truth = model(images).argmax(1)
    given = {None: truth, "column": truth[:, None], "float": truth.float()}[labels]
    with pytest.raises(InvalidInputError, match=message):
        select_correct(model, images, given, n, batch_size=batch_size)


class _SparesTheFirstRow(nn.Module):
    """Every row gets the first image's logits: alone, each image is classified right."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:1]).expand(x.shape[0], 3)


class _DoublesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mul_(2))


class _MetaLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, device="meta")


def test_a_forward_that_mixes_the_batch_but_spares_its_first_row_is_refused() -> None:
    """``net(x[:1]).expand(N, K)`` passed the probe (the first image is right in a batch and
    alone): eval printed 89.93% error for a 9.17% model, the attack 'fooled' untouched images."""
    from intriguing.attacks import LBFGS
    from intriguing.inputs import check_model_input

    torch.manual_seed(0)
    model, images = _SparesTheFirstRow().eval(), torch.rand(5, 1, 4, 4)
    with pytest.raises(InvalidInputError, match="different logits for the same image"):
        check_model_input(model, images)
    with pytest.raises(InvalidInputError, match="different logits for the same image"):
        LBFGS(progress=False)(model, images)


def test_a_forward_that_changes_its_input_in_place_leaves_the_callers_images() -> None:
    """``x.mul_(2)`` in forward doubled the caller's images in compute_activations and predict."""
    from intriguing.analysis.activations import compute_activations
    from intriguing.models.user import predict

    torch.manual_seed(0)
    model, images = _DoublesItsInput().eval(), torch.rand(5, 1, 4, 4)
    kept = images.clone()
    compute_activations(model, "net.1", images)
    predict(model, images)
    assert torch.equal(images, kept)


def test_logits_on_the_meta_device_are_one_line() -> None:
    """A ``RuntimeError: Tensor.item() cannot be called on meta tensors`` traceback before."""
    from intriguing.inputs import check_model_input

    with pytest.raises(InvalidInputError, match="logits on the meta device"):
        check_model_input(_MetaLogits().eval(), torch.rand(2, 1, 4, 4))
