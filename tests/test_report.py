"""The reproduce report: rendered from stored results only (no attack), self-contained HTML, errors."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from intriguing.cli.main import cli
from intriguing.experiments.reproduce import run_reproduce
from intriguing.experiments.specs import make_spec
from intriguing.report.render import (
    Cell,
    Heading,
    Table,
    distortion_cell,
    error_cell,
    to_markdown,
)


@pytest.fixture(scope="module")
def run_dir(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_reproduce(make_spec("tiny", dataset="mnist-5k"), out)
    return out


def test_report_rerenders_without_computing(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the report recomputed something")

    monkeypatch.setattr("intriguing.attacks.LBFGS.__call__", boom)
    monkeypatch.setattr("intriguing.experiments.reproduce.run_graph", boom)
    monkeypatch.setattr("intriguing.training.api.train_model", boom)
    for name in ("report.md", "report.html"):
        (run_dir / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.md").exists() and (run_dir / "report.html").exists()


def test_html_is_self_contained_with_paper_numbers(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing external
    assert "(7.4%)" in page and "(0.062)" in page  # softmax1's paper test error and distortion
    assert 'class="flag"' in page
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["dataset"]["dataset"] == "mnist-5k"
    for value in (doc["versions"]["torch"], "mnist-5k", "Figure 7"):
        assert value in page


def test_markdown_lists_claims_and_tables(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "Figure 7", "claims"):
        assert heading in md
    assert (
        "figures/figure7.png" in md and (run_dir / "figures" / "figure7.png").stat().st_size > 1000
    )


def test_cells_flag_notable_differences() -> None:
    assert error_cell(0.10, 0.02).flagged and not error_cell(0.03, 0.02).flagged
    assert error_cell(0.03, 0.02).text == "3.0% (2.0%)"
    assert distortion_cell(0.03, 0.062).flagged and not distortion_cell(0.06, 0.062).flagged
    assert error_cell(0.5, None) == Cell("50.0%")
    md = to_markdown([Heading("T"), Table(("a", "b|c"), ((Cell("x", True), Cell("y")),))])
    assert "| **x** | y |" in md and "b\\|c" in md


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    assert "Traceback" not in missing.output
    empty = runner.invoke(cli, ["report", str(tmp_path)])
    assert empty.exit_code == 2 and "results.json not found" in empty.output
    (tmp_path / "results.json").write_text("{not json")
    corrupt = runner.invoke(cli, ["report", str(tmp_path)])
    assert corrupt.exit_code == 2 and "not valid JSON" in corrupt.output
    (tmp_path / "results.json").write_text('{"schema": "other"}')
    other = runner.invoke(cli, ["report", str(tmp_path)])
    assert other.exit_code == 2 and "not a reproduce results file" in other.output
    assert len(other.output.strip().splitlines()) == 1


def test_reproduce_cli_refuses_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = runner.invoke(cli, ["reproduce", "--quick", "--out", str(a_file)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    bad = runner.invoke(cli, ["reproduce", "--size", "huge"])
    assert bad.exit_code == 2


def test_reproduce_with_missing_data_dir_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "reproduce",
            "--size",
            "tiny",
            "--data-dir",
            str(tmp_path / "nodata"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_reproduce_refuses_two_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["reproduce", "--quick", "--full", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "choose one size" in result.output
