"""Recurrent zoo models and the ``recurrent`` experiment (issue #9, item 1).

Oracles: ``nn.LSTM``'s own final hidden state, the feedback loop's formula written out by hand,
finite differences (gradcheck), hand-built transfer matrices for the block means and the verdict,
the models' own predictions on the stored adversarial images, and an uninterrupted run for resume.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing.attacks import AttackResult
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError, InvalidInputError, UnknownModelError
from intriguing.experiments.recurrent import (
    MATCHED,
    is_recurrent,
    make_spec,
    run_recurrent,
    transfer_blocks,
)
from intriguing.experiments.specs import AttackSettings
from intriguing.models import build_model, get_entry, register_model, unregister_model
from intriguing.models.recurrent import (
    RECURRENT_MODELS,
    FeedbackLoop,
    feedback_net,
    row_gru,
    row_lstm,
)
from intriguing.report.recurrent import load_recurrent, render_recurrent, verdict
from intriguing.training.config import TrainConfig

DATASET = "mnist-5k"
TINY = ("tiny-LSTM", "tiny-Feedback", "softmax1")
TINY_ATTACK = AttackSettings(search_steps=4, max_iter=20, c_rtol=0.2, refine=False)


# ------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_zoo_models_map_images_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    entry = get_entry(name)
    assert entry.train_config.optimizer == "adam" and entry.train_split == "train"
    assert is_recurrent(name)


def test_feedforward_models_are_not_recurrent() -> None:
    assert not is_recurrent("softmax1") and not is_recurrent("Conv")


def test_aliases_resolve() -> None:
    assert get_entry("lstm").name == "LSTM-rows"
    assert get_entry("GRU").name == "GRU-rows"


def test_row_reader_returns_the_lstm_final_state() -> None:
    torch.manual_seed(1)
    model = row_lstm(hidden=7).eval()
    x = torch.rand(2, 1, 28, 28)
    cell, out = model.get_submodule("rnn.cell"), model.get_submodule("out")
    _, (h_n, _) = cell(x[:, 0])  # rows are the time steps: (N, 28 steps, 28 pixels)
    expected = out(h_n[-1])
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_row_reader_reads_rows_in_order() -> None:
    torch.manual_seed(2)
    model = row_gru(hidden=5).eval()
    x = torch.rand(1, 1, 28, 28)
    flipped = x.flip(2)  # same rows, reversed order
    assert not torch.allclose(model(x), model(flipped))


def test_feedback_loop_matches_its_formula() -> None:
    torch.manual_seed(3)
    loop = FeedbackLoop(784, 6, 10, steps=3).eval()
    x = torch.rand(4, 784)
    u = loop.inp(x)
    h = torch.tanh(u)
    for _ in range(2):
        y = loop.out(h)
        h = torch.tanh(u + h @ loop.rec.weight.T + torch.softmax(y, 1) @ loop.fb.weight.T)
    assert torch.allclose(loop(x), loop.out(h), atol=1e-6)
    one_step = FeedbackLoop(784, 6, 10, steps=1)
    assert torch.allclose(one_step(x), one_step.out(torch.tanh(one_step.inp(x))), atol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [lambda: row_lstm(hidden=4), lambda: row_gru(hidden=4), lambda: feedback_net(5, 3)],
    ids=["lstm", "gru", "feedback"],
)
def test_input_gradients_match_finite_differences(factory: Any) -> None:
    torch.manual_seed(4)
    model = factory().double().eval()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t)[:, 2], (x,), eps=1e-6, atol=1e-5)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_shapes_and_settings_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        row_lstm(hidden=3)(torch.rand(2, 28, 28))
    with pytest.raises(InvalidInputError, match="steps"):
        FeedbackLoop(784, 4, 10, steps=0)


def test_spectral_bounds_refuse_recurrent_layers_in_one_line() -> None:
    from intriguing.analysis.lipschitz import network_bounds

    for name in RECURRENT_MODELS:
        if name == "Feedback":  # unrolled by torch.fx: Linear, tanh, softmax, sums; it has a bound
            bound = network_bounds(build_model(name).eval(), (1, 28, 28))
            assert bound.measured is not None and bound.lipschitz >= bound.measured.value > 0
            continue
        with pytest.raises(IntriguingError) as info:
            network_bounds(build_model(name).eval(), (1, 28, 28))
        assert "\n" not in str(info.value) and "no Lipschitz rule" in str(info.value)


def test_hidden_layers_give_unit_activations() -> None:
    from intriguing.analysis.activations import compute_activations

    for name, width in (("LSTM-rows", 128), ("Feedback", 512)):
        model = build_model(name).eval()
        layer = get_entry(name).hidden_layer
        assert layer is not None
        phi = compute_activations(model, layer, torch.rand(3, 1, 28, 28))
        assert tuple(phi.shape) == (3, width)


# ------------------------------------------------------------------------------------- tables
def _matrix(errors: dict[str, dict[str, float]], noise: dict[str, float]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        {"label": s, "kind": "adversarial", "source": s, "errors": e} for s, e in errors.items()
    ]
    rows.append(
        {"label": "noise", "kind": "noise", "source": None, "noise": MATCHED, "errors": noise}
    )
    return {"columns": list(errors), "rows": rows}


KINDS = {"R1": "recurrent", "R2": "recurrent", "F1": "feedforward"}
ERRORS = {
    "R1": {"R1": 1.0, "R2": 0.5, "F1": 0.2},
    "R2": {"R1": 0.3, "R2": 1.0, "F1": 0.4},
    "F1": {"R1": 0.1, "R2": 0.05, "F1": 1.0},
}


def test_block_means_exclude_the_diagonal() -> None:
    blocks = {
        (b["source"], b["target"]): b
        for b in transfer_blocks(_matrix(ERRORS, {"R1": 0.0, "R2": 0.02, "F1": 0.01}), KINDS)
    }
    assert blocks[("recurrent", "recurrent")]["mean"] == pytest.approx((0.5 + 0.3) / 2)
    assert blocks[("recurrent", "feedforward")]["mean"] == pytest.approx((0.2 + 0.4) / 2)
    assert blocks[("feedforward", "recurrent")]["mean"] == pytest.approx((0.1 + 0.05) / 2)
    assert blocks[("feedforward", "feedforward")]["cells"] == 0
    assert blocks[("feedforward", "feedforward")]["mean"] is None
    assert blocks[("noise matched", "recurrent")]["mean"] == pytest.approx(0.01)


def _table(success: float, noise: dict[str, float]) -> dict[str, Any]:
    matrix = _matrix(ERRORS, noise)
    rows = [
        {
            "model": m,
            "kind": k,
            "success_rate": success if k == "recurrent" else 1.0,
            "mean_distortion": 0.05 if k == "recurrent" else 0.08,
        }
        for m, k in KINDS.items()
    ]
    return {
        "rows": rows,
        "kinds": KINDS,
        "matrix": matrix,
        "blocks": transfer_blocks(matrix, KINDS),
    }


def test_verdict_reads_the_numbers() -> None:
    yes = verdict(_table(1.0, {"R1": 0.0, "R2": 0.0, "F1": 0.01}))
    assert yes == (
        "Yes: every attacked example of the 2 recurrent nets fell, at mean RMS distortion 0.050 "
        "(below the feedforward nets' 0.080); at that distortion examples transfer across "
        "families (RNN->FF 30.0%, FF->RNN 7.5% mean error vs 1.0%/0.0% for same-stddev noise)."
    )
    no = verdict(_table(0.9, {"R1": 0.05, "R2": 0.05, "F1": 0.3}))
    assert no.startswith("No: the attack fooled the recurrent nets on only 90.0%")
    assert "examples barely transfer across families (RNN->FF 30.0%, FF->RNN 7.5%" in no
    one_way = verdict(_table(1.0, {"R1": 0.0, "R2": 0.0, "F1": 0.2}))
    assert "examples transfer only FF->RNN (" in one_way


def test_verdict_judges_amplified_rows_against_their_noise_row() -> None:
    table = _table(1.0, {"R1": 0.0, "R2": 0.0, "F1": 0.0})
    rows = table["matrix"]["rows"]
    rows.append(
        {"kind": "amplified", "source": "R1", "stddev": 0.1, "errors": {"R2": 0.9, "F1": 0.6}}
    )
    rows.append(
        {"kind": "amplified", "source": "F1", "stddev": 0.1, "errors": {"R1": 0.7, "R2": 0.5}}
    )
    rows.append(
        {
            "kind": "noise",
            "source": None,
            "noise": "0.1",
            "errors": {"R1": 0.1, "R2": 0.1, "F1": 0.4},
        }
    )
    table["blocks"] = transfer_blocks(table["matrix"], KINDS)
    text = verdict(table)
    assert text.endswith(
        "rescaled to RMS 0.1 examples transfer only FF->RNN (RNN->FF 60.0%, FF->RNN 60.0% mean "
        "error vs 40.0%/10.0% for same-stddev noise)."
    )
    names = [(b["source"], b["target"]) for b in table["blocks"]]
    assert names.index(("recurrent amplified 0.1", "recurrent")) == 4  # after the raw blocks


# ------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def tiny_models() -> Iterator[None]:
    quick = TrainConfig(optimizer="adam", epochs=1, lr=1e-2, batch_size=64)
    register_model(
        "tiny-LSTM", lambda: row_lstm(hidden=12), description="test LSTM", train_config=quick
    )
    register_model(
        "tiny-Feedback",
        lambda: feedback_net(hidden=24, steps=2),
        description="test feedback net",
        train_config=quick,
    )
    yield
    unregister_model("tiny-LSTM")
    unregister_model("tiny-Feedback")


def _run(out: Path, n: int = 6) -> dict[str, Any]:
    spec = make_spec(
        n, TINY, dataset=DATASET, attack=TINY_ATTACK, shard_size=4, noise_stddevs=(0.1,)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mnist-5k warning
        return run_recurrent(spec, out, render=False)


@pytest.fixture(scope="module")
def tiny_run(
    mnist_dir: Path, tiny_models: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("recurrent-run")
    return out, _run(out)


def test_run_has_rows_matrix_and_blocks(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, doc = tiny_run
    table = doc["table"]
    assert doc["schema"] == "intriguing.recurrent/1"
    assert doc["config"]["recurrent"] == ["tiny-LSTM", "tiny-Feedback"]
    assert doc["config"]["feedforward"] == ["softmax1"]
    assert [r["model"] for r in table["rows"]] == list(TINY)
    labels = [r["label"] for r in table["matrix"]["rows"]]
    assert labels[:3] == list(TINY) and labels[3].startswith("noise matched")
    for row in table["rows"]:
        assert row["n"] == 6 and row["verify_mismatches"] == 0
        assert row["verified"] == round(row["success_rate"] * 6)


def test_selected_images_are_right_for_every_model(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    selection = json.loads((out / "steps/select/test/common.json").read_text())["result"]
    assert doc["selection"]["n"] == len(selection["indices"]) == 6
    for row in doc["table"]["matrix"]["rows"][:3]:
        assert set(row["clean_errors"].values()) == {0.0}


def test_cross_cells_match_direct_evaluation(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    from intriguing.training import load_model

    out, doc = tiny_run
    rows = {r["label"]: r for r in doc["table"]["matrix"]["rows"]}
    summary = json.loads((out / "steps/attacks/test/tiny-LSTM/untargeted.json").read_text())
    parts = [AttackResult.load(out / a) for a in summary["result"]["artifacts"]]
    adv = torch.cat([p.adversarial for p in parts])
    labels = torch.cat([p.labels for p in parts])
    for target in TINY:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mnist-5k warning
            model = load_model(target, dataset=DATASET)
        with torch.no_grad():
            error = (model(adv).argmax(1) != labels).double().mean().item()
        assert rows["tiny-LSTM"]["errors"][target] == pytest.approx(error)
    own = doc["table"]["rows"][0]["success_rate"]
    assert rows["tiny-LSTM"]["errors"]["tiny-LSTM"] == pytest.approx(own)


def test_matched_noise_has_the_mean_adversarial_distortion(
    tiny_run: tuple[Path, dict[str, Any]],
) -> None:
    _, doc = tiny_run
    means = [r["mean_distortion"] for r in doc["table"]["rows"] if r["mean_distortion"]]
    matched = next(r for r in doc["table"]["matrix"]["rows"] if r.get("noise") == MATCHED)
    assert matched["stddev"] == pytest.approx(sum(means) / len(means))
    assert 0 < matched["distortion"] <= matched["stddev"] * 1.05  # clipping only shrinks it


def test_amplified_rows_rescale_the_successful_perturbations(
    tiny_run: tuple[Path, dict[str, Any]],
) -> None:
    _, doc = tiny_run
    amplified = {r["source"]: r for r in doc["table"]["matrix"]["rows"] if r["kind"] == "amplified"}
    assert list(amplified) == list(TINY)
    for row in doc["table"]["rows"]:
        amp = amplified[row["model"]]
        assert amp["n"] == row["verified"]  # every success, and only successes
        assert 0 < amp["distortion"] <= 0.1 + 1e-6  # rescaled to RMS 0.1, clipping only lowers it
    blocks = {(b["source"], b["target"]) for b in doc["table"]["blocks"]}
    assert ("recurrent amplified 0.1", "feedforward") in blocks


def test_report_renders_table_figure_and_verdict(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    paths = render_recurrent(out)
    text = paths["markdown"].read_text()
    assert verdict(doc["table"]) in text and "| tiny-LSTM |" in text
    assert paths["figure"].stat().st_size > 1000


def test_rerun_reuses_every_step(
    tiny_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, doc = tiny_run

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished step was recomputed")

    monkeypatch.setattr("intriguing.attacks.LBFGS.__call__", boom)
    again = _run(out)
    strip = lambda d: {k: v for k, v in copy.deepcopy(d).items() if k != "timings"}  # noqa: E731
    assert strip(again) == strip(doc)


def test_lost_shard_is_recomputed_to_the_same_result(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import shutil

    out, doc = tiny_run
    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    (copy_dir / "steps/attack/test/tiny-Feedback/untargeted/shard-0001.json").unlink()
    (copy_dir / "steps/tables/recurrent.json").unlink()
    again = _run(copy_dir)
    assert again["table"] == doc["table"]


# ------------------------------------------------------------------------------------- errors
def test_bad_specs_are_refused(tiny_models: None) -> None:
    with pytest.raises(InvalidInputError, match="--n"):
        make_spec(0)
    with pytest.raises(UnknownModelError, match="unknown model"):
        make_spec(5, ["LSTM-rows", "no-such-net"])
    with pytest.raises(InvalidInputError, match="twice"):
        make_spec(5, ["LSTM", "LSTM-rows"])
    with pytest.raises(InvalidInputError, match="stddevs"):
        make_spec(5, ["softmax1"], noise_stddevs=(float("nan"),))


def test_report_refuses_missing_or_foreign_results(tmp_path: Path) -> None:
    with pytest.raises(IntriguingError, match="not found"):
        load_recurrent(tmp_path)
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(IntriguingError, match="not valid JSON"):
        load_recurrent(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": "intriguing.reproduce/1"}))
    with pytest.raises(
        IntriguingError, match=r"results of `intriguing reproduce`.*not of `intriguing recurrent`"
    ):
        load_recurrent(tmp_path)


# ------------------------------------------------------------------------------------- CLI
def test_cli_user_mistakes_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["recurrent", "--models", "nope", "--out", str(tmp_path / "a")],
        ["recurrent", "--n", "0", "--out", str(tmp_path / "b")],
        ["recurrent", "--models", "softmax1,softmax1", "--out", str(tmp_path / "c")],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "Error:" in result.output and "Traceback" not in result.output
    afile = tmp_path / "file"
    afile.write_text("x")
    result = runner.invoke(cli, ["recurrent", "--models", "softmax1", "--out", str(afile)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_cli_runs_and_writes_json(mnist_dir: Path, tiny_models: None, tmp_path: Path) -> None:
    out, json_file = tmp_path / "run", tmp_path / "doc.json"
    args = ["recurrent", "--models", "tiny-Feedback,softmax1", "--n", "2", "--dataset", DATASET]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--json", str(json_file)])
    assert result.exit_code == 0, result.output
    doc = json.loads(json_file.read_text())
    assert doc == json.loads((out / "results.json").read_text())
    assert "Verdict:" in result.output and (out / "report.md").exists()
    assert [r["model"] for r in doc["table"]["rows"]] == ["tiny-Feedback", "softmax1"]


def test_layers_are_named_modules() -> None:
    model = build_model("Feedback")
    names = dict(model.named_modules())
    assert isinstance(names["loop.hidden"], nn.Identity) and isinstance(
        names["flatten"], nn.Flatten
    )
