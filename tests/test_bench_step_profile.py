"""``benchmarks/step_profile.py``, ``shard_size.py``, ``chunk_rows.py``, ``softmax1_oracle.py``,
``logit_scale.py``, ``estimate_classes.py``, ``prune_beaten.py``, ``lead_first.py``, ``ray_shrink.py``
and ``candidate_smoothing.py``: the drain table worked out by hand, and bad arguments refused with one line and
exit code 2 before any model is loaded or attacked."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import step_profile


def test_drain_table_bands_steps_by_rows_and_times_each_until_the_next() -> None:
    # steps start at 0, 1, 3, 3.5 s evaluating 512, 300, 40, 3 rows; the call ends at 4 s
    log = [(0.0, 512), (1.0, 300), (3.0, 40), (3.5, 3)]
    lines = step_profile.drain_table(log, end=4.0)
    assert lines[2:] == [
        "| 0-15 | 1 | 0.50 | 500.00 |",
        "| 16-63 | 1 | 0.50 | 500.00 |",
        "| >= 256 | 2 | 3.00 | 1500.00 |",
    ]


@pytest.mark.parametrize("flag", ["--n", "--batch-size"])
def test_counts_below_one_exit_2(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        step_profile.main(["softmax1", flag, "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {flag} must be >= 1"


def test_unknown_model_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        step_profile.main(["no-such-model", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no-such-model" in err


def test_shard_configs_parse_and_bad_ones_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import shard_size

    assert shard_size.parse_configs("1000x512, 5000X1024") == [(1000, 512), (5000, 1024)]
    for bad in ("1000", "0x512", "ax2", "1000x512x2", "-5x3"):
        with pytest.raises(SystemExit) as stop:
            shard_size.main(["N100-100-10", f"--configs={bad}"])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --configs item") and "\n" not in err


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("softmax1_oracle", ["--n", "0"], "error: --n must be >= 1"),
        ("softmax1_oracle", ["--model", "N100-100-10"], "invalid choice: 'N100-100-10'"),
        ("softmax1_oracle", ["--scale", "0"], "error: --scale must be a finite number > 0"),
        ("softmax1_oracle", ["--scale", "nan"], "error: --scale must be a finite number > 0"),
        ("logit_scale", ["N100-100-10", "--n", "0"], "error: --n must be >= 1"),
        ("logit_scale", ["N100-100-10", "--scales", "1", "0"], "error: every --scales value"),
        ("logit_scale", ["N100-100-10", "--scales", "inf"], "error: every --scales value"),
        ("logit_scale", ["no-such-model"], "error:"),
        ("chunk_rows", ["relu-cnn", "--n", "0"], "error: --n must be >= 1"),
        ("chunk_rows", ["relu-cnn", "--repeats", "0"], "error: --repeats must be >= 1"),
        ("chunk_rows", ["relu-cnn", "--budgets", "none,0"], "error: --budgets item '0'"),
        ("chunk_rows", ["relu-cnn", "--budgets", "20,x"], "error: --budgets item 'x'"),
        ("chunk_rows", ["no-such-model"], "error:"),
        ("estimate_classes", ["softmax1", "--n", "0"], "error: --n must be >= 1"),
        ("estimate_classes", ["softmax1", "--classes", "5,0"], "error: --classes '5,0'"),
        ("estimate_classes", ["softmax1", "--classes", "5,x"], "error: --classes '5,x'"),
        ("estimate_classes", ["no-such-model"], "error:"),
        ("prune_beaten", ["softmax1", "--n", "0"], "error: --n must be >= 1"),
        ("prune_beaten", ["softmax1", "--factors", "1,0.9"], "error: --factors '1,0.9'"),
        ("prune_beaten", ["softmax1", "--factors", "1,x"], "error: --factors '1,x'"),
        ("prune_beaten", ["softmax1", "--factors", "nan"], "error: --factors 'nan'"),
        ("prune_beaten", ["no-such-model"], "error:"),
        ("lead_first", ["softmax1", "--n", "-1"], "error: --n must be >= 0"),
        ("lead_first", ["softmax1", "--pairs", "-2"], "error: --pairs must be >= 0"),
        ("lead_first", ["softmax1", "--time-n", "0"], "error: --time-n must be >= 1"),
        ("lead_first", ["softmax1", "--head-starts", "20,0"], "error: --head-starts '20,0'"),
        ("lead_first", ["softmax1", "--head-starts", "nan"], "error: --head-starts 'nan'"),
        ("lead_first", ["softmax1", "--head-starts", "x"], "error: --head-starts 'x'"),
        ("lead_first", ["no-such-model"], "error:"),
        ("ray_shrink", ["softmax1", "--n", "0"], "error: --n must be >= 1"),
        ("ray_shrink", ["no-such-model"], "error:"),
        ("candidate_smoothing", ["softmax1", "--n", "0"], "error: --n must be >= 1"),
        ("candidate_smoothing", ["softmax1", "--values", "1,0"], "error: --values '1,0'"),
        ("candidate_smoothing", ["softmax1", "--values", "nan"], "error: --values 'nan'"),
        ("candidate_smoothing", ["softmax1", "--values", "inf"], "error: --values 'inf'"),
        ("candidate_smoothing", ["no-such-model"], "error:"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    script: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(script).main
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    if message.startswith("error:"):  # ours: one line (argparse's own add its usage line)
        assert "\n" not in err


def test_chunk_budgets_parse_in_mib() -> None:
    import chunk_rows

    assert chunk_rows.parse_budgets("none, 16,32") == [chunk_rows.NONE, 16 * 2**20, 32 * 2**20]


def test_top_logit_count_on_a_model_whose_distances_follow_the_logits() -> None:
    """Equal-norm class directions: the nearest classes are the largest logits, so the three
    nearest lie within the top e logits exactly when e >= 3."""
    import estimate_classes

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 6, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(6) * 3.0)
    x = torch.rand(10, 6)
    y = model(x).argmax(1)
    rank = estimate_classes.nearest_logit_rank(model, x, y)
    assert [int((rank < e).sum()) for e in (2, 3, 5)] == [0, 10, 10]


def test_oracle_scale_multiplies_the_logits_and_keeps_the_decisions() -> None:
    import softmax1_oracle

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    before = model(x).detach()
    after = softmax1_oracle.scaled(model, 10.0)(x).detach()
    torch.testing.assert_close(after, 10.0 * before)
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_logit_scale_wrapper_keeps_the_decisions() -> None:
    import logit_scale

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh())
    x = torch.rand(6, 1, 2, 2)
    scaled = logit_scale.ScaledLogits(model, 0.01)(x).detach()
    torch.testing.assert_close(scaled, 0.01 * model(x).detach())
    assert torch.equal(scaled.argmax(1), model(x).argmax(1))


def test_logit_scale_missing_data_exits_2_before_any_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logit_scale

    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached
    with pytest.raises(SystemExit) as stop:
        logit_scale.main(["relu-mlp", "--data-dir", str(tmp_path / "missing")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err


def test_lead_first_schedule_restores_the_defaults() -> None:
    import intriguing.attacks.lbfgs as lbfgs
    import lead_first

    saved = lbfgs.LEAD_FIRST, lbfgs.LEAD_HEAD_START
    with lead_first.schedule(None):
        assert lbfgs.LEAD_FIRST is False
    with lead_first.schedule(float("inf")):
        assert lbfgs.LEAD_FIRST is True and lbfgs.LEAD_HEAD_START == lead_first.NEVER
    with lead_first.schedule(7.0):
        assert lbfgs.LEAD_HEAD_START == 7
    assert saved == (lbfgs.LEAD_FIRST, lbfgs.LEAD_HEAD_START)


def test_number_lists_take_numbers_from_1_and_inf_only_when_allowed() -> None:
    import strong_models

    assert strong_models.number_list("1, 1.05", "--x", "1,2") == [1.0, 1.05]
    assert strong_models.number_list("20,inf", "--x", "1,2", allow_inf=True) == [20.0, math.inf]
    for text, allow_inf in (
        ("inf", False),
        ("0.5", True),
        ("nan", True),
        ("", False),
        ("1,x", True),
    ):
        with pytest.raises(ValueError, match="--x"):
            strong_models.number_list(text, "--x", "1,2", allow_inf=allow_inf)
