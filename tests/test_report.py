"""The reproduce report: rendered from stored results only (no attack), self-contained HTML, errors."""

from __future__ import annotations

import importlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from intriguing._io import results_digest, sealed
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
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
    monkeypatch.setattr("intriguing.experiments.rundir.run_graph", boom)
    monkeypatch.setattr("intriguing.training.api.train_model", boom)
    monkeypatch.setattr("intriguing.analysis.units.analyse_units", boom)
    monkeypatch.setattr("intriguing.analysis.lipschitz.network_bounds", boom)
    monkeypatch.setattr(importlib.import_module("intriguing.analysis.sandwich"), "sandwich", boom)
    monkeypatch.setattr("intriguing.report.units_figures.render_units_figures", boom)
    before = (run_dir / "report.md").read_text()
    for name in ("report.md", "report.html"):
        (run_dir / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.md").exists() and (run_dir / "report.html").exists()
    md = (run_dir / "report.md").read_text()
    assert md == before  # same report from the stored results, units and spectral included
    assert "Unit analysis (§3)" in md and "Spectral analysis (§4.3)" in md


def test_html_is_self_contained_with_paper_numbers(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 6  # 4 + the units step's two figures
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


def test_results_and_report_hold_units_and_spectral_sections(run_dir: Path) -> None:
    doc = json.loads((run_dir / "results.json").read_text())
    units = doc["units"]["softmax1"]
    assert units["schema"] == "intriguing.units/1" and units["layer"] == "flatten"
    assert units["dim"] == 784 and units["n_images"] == doc["dataset"]["test_size"]
    assert units["record"] == "steps/units/softmax1.json"
    assert all("directions" not in fam for fam in units["families"].values())
    for path in units["figures"].values():
        assert (run_dir / path).stat().st_size > 1000
    spectral = doc["spectral"]
    assert set(spectral["models"]) == {"softmax1", "softmax2", "softmax3"}
    assert spectral["sandwich"]["softmax1"]["source"] == "table1"
    assert spectral["sandwich"]["softmax3"]["source"] == "own attack"
    md = (run_dir / "report.md").read_text()
    assert "Verdict: softmax1/flatten: natural-basis directions" in md
    assert "Verdict: softmax1: the certified bound is never above" in md
    assert "artifacts/units/softmax1/softmax1-topk.png" in md
    ids = {c["id"]: c for c in doc["claims"]}
    assert "spectral-certified" not in ids  # a theorem: a sanity check, not a paper claim
    checks = {c["id"]: c for c in doc["sanity"]}
    assert checks["certified-softmax1"]["passed"] and checks["certified-softmax3"]["passed"]
    test = next(c for c in units["comparisons"] if (c["a"], c["b"]) == ("natural", "random"))
    better = test["p_mannwhitney"] < 0.05 and test["rank_biserial"] > 0
    if better:
        assert ids["units-not-privileged"]["verdict"] == "fails"
    else:
        assert ids["units-not-privileged"]["verdict"] in ("holds", "inconclusive")


def _out_weight(model: torch.nn.Module) -> torch.Tensor:
    out = model.get_submodule("out")
    assert isinstance(out, torch.nn.Linear)
    return out.weight.detach()


@pytest.mark.filterwarnings("ignore:.*mnist-5k")
def test_spectral_bound_of_a_linear_model_is_its_spectral_norm(run_dir: Path) -> None:
    """Oracle: softmax's Lipschitz constant is the largest singular value of its weight matrix."""
    from intriguing.training import load_model

    doc = json.loads((run_dir / "results.json").read_text())
    for name in ("softmax1", "softmax3"):
        weight = _out_weight(load_model(name, dataset="mnist-5k")).double()
        singular = torch.linalg.svdvals(weight)
        entry = doc["spectral"]["models"][name]
        assert entry["lipschitz_upper"] == pytest.approx(float(singular[0]), rel=1e-9)
        out = entry["bound"]["layers"][-1]
        assert out["lower"] == pytest.approx(float(singular[-1]), rel=1e-6)


@pytest.mark.filterwarnings("ignore:.*mnist-5k")
def test_sandwich_reuses_table1_attacks_and_certifies_the_exact_linear_radius(
    run_dir: Path,
) -> None:
    """Oracle: on a linear model the pairwise radius is min_j (z_y - z_j) / ||W_y - W_j||."""
    from intriguing.data import load_mnist
    from intriguing.training import load_model

    record = json.loads((run_dir / "steps/sandwich/softmax1.json").read_text())["result"]
    shard = json.loads(
        (run_dir / "steps/attack/train/softmax1/untargeted/shard-0000.json").read_text()
    )
    rows = record["examples"]
    assert [r["index"] for r in rows[:4]] == shard["result"]["indices"]
    for row, dist in zip(rows, shard["result"]["distortion"], strict=False):
        assert row["attack_distortion"] == pytest.approx(dist, rel=1e-6)
    model = load_model("softmax1", dataset="mnist-5k").double()
    images, labels = load_mnist(dataset="mnist-5k").split("train")
    w = _out_weight(model)
    for row in rows:
        x, y = images[row["index"]].double().reshape(1, -1), int(labels[row["index"]])
        z = model(x.reshape(1, 1, 28, 28)).detach()[0]
        radius = min(
            float((z[y] - z[j]) / torch.linalg.vector_norm(w[y] - w[j]))
            for j in range(10)
            if j != y
        )
        assert row["certified_pairwise"] == pytest.approx(radius / 28.0, rel=1e-6)
        assert row["certified_pairwise"] <= row["attack_distortion"] + 1e-12
    assert record["summary"]["violations"] == 0


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
    assert other.exit_code == 2 and "not the results of `intriguing reproduce`" in other.output
    assert len(other.output.strip().splitlines()) == 1
    for command in ("classes", "recurrent"):  # another command's good run: name it, no "rerun"
        (tmp_path / "results.json").write_text(json.dumps({"schema": f"intriguing.{command}/1"}))
        theirs = runner.invoke(cli, ["report", str(tmp_path)])
        assert theirs.exit_code == 2 and len(theirs.output.strip().splitlines()) == 1
        assert f"holds the results of `intriguing {command}`" in theirs.output
        assert "rerun" not in theirs.output


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


def test_reproduce_refuses_zero_seeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["reproduce", "--size", "tiny", "--seeds", "0", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and "--seeds" in result.output


# ------------------------------------------------------------------------------- issue 15
def test_mnist_5k_warning_comes_before_everything(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    first = md.splitlines()[0]
    assert first.startswith("> **WARNING:**") and "mnist-5k" in first and "NOT" in first
    assert md.index("Dataset: mnist-5k (4000 train / 1000 test images)") < md.index("## ")
    page = (run_dir / "report.html").read_text()
    assert page.index('<div class="warning">') < page.index("<h1>")


def test_terminal_summary_warns_only_off_mnist(run_dir: Path) -> None:
    from intriguing.cli.reproduce_cmd import _dataset_banner, _summary_tables

    doc = json.loads((run_dir / "results.json").read_text())
    banner = _dataset_banner(doc)
    assert banner is not None and "mnist-5k" in str(banner.renderable)
    full = doc | {"dataset": doc["dataset"] | {"dataset": "mnist"}}
    assert _dataset_banner(full) is None
    titles = [t.title for t in _summary_tables(doc)]
    assert any("claims" in str(t) for t in titles) and any("sanity" in str(t) for t in titles)


def test_full_mnist_report_names_the_dataset_without_a_warning(run_dir: Path) -> None:
    from intriguing.report.blocks import Alert, Para
    from intriguing.report.render import build_blocks

    doc = json.loads((run_dir / "results.json").read_text())
    doc["dataset"] = doc["dataset"] | {"dataset": "mnist", "train_size": 60000, "test_size": 10000}
    blocks = build_blocks(doc, {})
    assert not any(isinstance(b, Alert) for b in blocks)
    assert isinstance(blocks[1], Para) and blocks[1].text.startswith("Dataset: mnist (60000 train")


def test_notes_and_claims_use_this_runs_numbers(run_dir: Path) -> None:
    """No fixed "0.027"; the gap note's ratio range is recomputed from Table 1; rules and sanity
    checks are printed; the seeds column appears with a stability record and flags a change."""
    from intriguing.report.render import build_blocks, gap_note

    md = (run_dir / "report.md").read_text()
    assert "0.027" not in md
    doc = json.loads((run_dir / "results.json").read_text())
    rows = doc["tables"]["table1"]["rows"]
    ratios = [r["mean_distortion"] / r["paper"]["distortion"] for r in rows]
    assert f"{min(ratios):.2f}-{max(ratios):.2f} times the paper's" in gap_note(
        doc["tables"]["table1"]
    )
    assert "Sanity checks (not claims of the paper)" in md and "rule:" in md
    assert "uncertainty" in md and "95% CI [" in md
    ids = [c["id"] for c in doc["claims"]]
    doc["stability"] = {
        "seeds": [0, 1],
        "claims": {i: {"verdicts": ["holds", "fails"], "stable": False} for i in ids},
    }
    table = next(
        b for b in build_blocks(doc, {}) if isinstance(b, Table) and "uncertainty" in b.header
    )
    assert table.header[-1] == "same verdict at seeds 0, 1"
    assert all(row[-1].flagged and row[-1].text == "no: holds, fails" for row in table.rows)


def test_advtrain_report_uses_the_recorded_test_size() -> None:
    from intriguing.report.advtrain import comparison_table, test_size, verdicts

    summary = {"baseline": "wd", "rows": [{"variant": "wd", "mean": 0.02, "sd": 0.001}]}
    assert test_size([{"n_test": 1000}, {"n_test": 1000}]) == 1000
    assert test_size([{}]) is None
    with pytest.raises(IntriguingError, match="different test sets"):
        test_size([{"n_test": 1000}, {"n_test": 10000}])
    line = verdicts(summary, 1000)[0]
    assert "on 1000 images" in line and f"{100 * (0.02 * 0.98 / 1000) ** 0.5:.2f} points" in line
    assert not any("Noise scale" in v for v in verdicts(summary, None))
    empty = {"baseline": "wd", "rows": []}
    assert "size not recorded" in comparison_table(empty, None).caption
    caption = comparison_table(empty, 1000).caption
    assert "on 1000 test images" in caption and "10000" not in caption


def test_report_refuses_claims_judged_by_older_rules(run_dir: Path, tmp_path: Path) -> None:
    doc = json.loads((run_dir / "results.json").read_text())
    old = doc | {"claims": [{"id": "x", "claim": "c", "verdict": "partly", "holds": 1, "total": 2}]}
    old.pop("sanity")
    old.pop("digest")
    (tmp_path / "results.json").write_text(json.dumps(sealed(old)))
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and "predate the rules" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_refuses_a_results_file_changed_after_the_run(run_dir: Path, tmp_path: Path) -> None:
    """results.json is sealed with a digest of its content: a hand-edited number used to be
    rendered as if the run had produced it."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    doc = json.loads((copy / "results.json").read_text())
    assert doc["digest"] == results_digest(doc)
    edited = json.loads(json.dumps(doc))
    edited["tables"]["table1"]["rows"][0]["mean_distortion"] = 0.001  # edited by hand
    (copy / "results.json").write_text(json.dumps(edited))
    result = CliRunner().invoke(cli, ["report", str(copy)])
    assert result.exit_code == 2, result.output
    assert "changed after the run" in result.output and "intriguing reproduce" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # timings are not sealed (wall times differ between identical runs); the content is
    retimed = doc | {"timings": doc["timings"] | {"wall_time_s": 1.0}}
    (copy / "results.json").write_text(json.dumps(retimed))
    assert CliRunner().invoke(cli, ["report", str(copy)]).exit_code == 0


def _report_of_copy(run_dir: Path, tmp_path: Path, edit: Any) -> Any:
    """``intriguing report`` on a copy of ``run_dir`` after ``edit(copy)``."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    edit(copy)
    return CliRunner().invoke(cli, ["report", str(copy)])


def _one_error_line(result: Any, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    for phrase in phrases:
        assert phrase in result.output, result.output


def test_report_refuses_a_results_file_without_its_digest(run_dir: Path, tmp_path: Path) -> None:
    """With the digest deleted, a hand-edited number used to be rendered as the run's."""

    def edit(copy: Path) -> None:
        doc = json.loads((copy / "results.json").read_text())
        doc["tables"]["table1"]["rows"][0]["mean_distortion"] = 0.5
        doc.pop("digest")
        (copy / "results.json").write_text(json.dumps(doc))

    _one_error_line(_report_of_copy(run_dir, tmp_path, edit), "has no digest", "reproduce")


def test_report_refuses_non_finite_numbers_in_one_line(run_dir: Path, tmp_path: Path) -> None:
    """json.loads accepts NaN; the digest then failed with a traceback (exit 1)."""

    def edit(copy: Path) -> None:
        text = (copy / "results.json").read_text()
        first = text.index('"mean_distortion": ') + len('"mean_distortion": ')
        end = text.index(",", first)
        (copy / "results.json").write_text(text[:first] + "NaN" + text[end:])

    _one_error_line(_report_of_copy(run_dir, tmp_path, edit), "non-finite number NaN")


def test_report_refuses_figure7_images_of_another_run(run_dir: Path, tmp_path: Path) -> None:
    """The images were drawn as found on disk, under this run's titles."""

    def edit(copy: Path) -> None:
        doc = json.loads((copy / "results.json").read_text())
        path = copy / doc["figure7"]["artifact"]
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        name = next(iter(tensors))
        tensors[name] = torch.flip(tensors[name], dims=[0]).contiguous()  # another run's images
        save_file(tensors, str(path))

    _one_error_line(_report_of_copy(run_dir, tmp_path, edit), "not the Figure 7 images of this run")


def test_report_refuses_a_units_figure_that_is_not_the_run_s(run_dir: Path, tmp_path: Path) -> None:
    """Another figure (another model's, in the probe) copied over a units figure was embedded under
    this one's caption."""

    def edit(copy: Path) -> None:
        import shutil

        from intriguing._io import sealed

        doc = json.loads((copy / "results.json").read_text())
        figures = next(iter(doc["units"].values()))["figures"]
        shutil.copyfile(copy / figures["distributions"], copy / figures["topk"])
        # and another run's results (sealed: they pass their own check) whose tables differ
        doc.pop("digest")
        for row in doc["tables"]["table1"]["rows"]:
            row["mean_distortion"] = 2 * row["mean_distortion"]
        (copy / "results.json").write_text(json.dumps(sealed(doc)))

    _one_error_line(_report_of_copy(run_dir, tmp_path, edit), "units figure of this run")
    # refused before any figure was drawn: the run's figures are as the run left them
    for figure in (run_dir / "figures").glob("*.png"):
        assert (tmp_path / "run" / "figures" / figure.name).read_bytes() == figure.read_bytes()


def test_report_refuses_a_missing_units_figure(run_dir: Path, tmp_path: Path) -> None:
    """A deleted units figure was left out of the report without a word (found by a probe)."""

    def edit(copy: Path) -> None:
        doc = json.loads((copy / "results.json").read_text())
        figures = next(iter(doc["units"].values()))["figures"]
        (copy / figures["topk"]).unlink()

    _one_error_line(_report_of_copy(run_dir, tmp_path, edit), "units figure of this run is missing")


def test_results_json_records_each_units_figure_s_hash(run_dir: Path) -> None:
    from intriguing._io import file_sha256

    units = json.loads((run_dir / "results.json").read_text())["units"]
    for run in units.values():
        assert run["figures"] and set(run["figures_sha256"]) == set(run["figures"])
        for kind, path in run["figures"].items():
            assert run["figures_sha256"][kind] == file_sha256(run_dir / path)


def test_a_results_path_that_is_a_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    from intriguing.errors import InvalidInputError
    from intriguing.experiments.rundir import RunDirectory

    (tmp_path / "a" / "results.json").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match=r"results\.json is a directory"):
        RunDirectory(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "steps").write_text("")
    with pytest.raises(InvalidInputError, match="steps is a file"):
        RunDirectory(tmp_path / "b")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "a")])
    _one_error_line(result, "is a directory, not a results file")


@pytest.mark.parametrize(
    ("share", "shown"),
    [(1.0, "100.0%"), (0.0, "0.0%"), (0.5, "50.0%"), (56053 / 56054, "99.998%"),
     (1 / 56054, "0.002%"), (0.123456, "12.3%")],
)  # fmt: skip
def test_a_percentage_never_rounds_a_failure_away(share: float, shown: str) -> None:
    """One failure in a --full run's 56054 attacks read as 100.0% (Table 1's claim is 100%)."""
    from intriguing.report.render import pct

    assert pct(share) == shown


def test_the_claims_evidence_never_rounds_a_failure_away() -> None:
    from intriguing.experiments import claims

    assert claims.pct(56053 / 56054) == "99.998%" and claims.pct(3 / 56054) == "0.01%"
