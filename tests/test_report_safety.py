"""Issue 16, item 5: ``intriguing report DIR`` reads only files inside DIR, refuses malformed
results.json with one line, and escapes Markdown like HTML.

Before: a figure path set to /etc/passwd was embedded (base64) in report.html; a missing key or a
string number in results.json gave a traceback; report.md kept raw HTML that report.html escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from intriguing._io import sealed
from intriguing.cli.main import cli
from intriguing.errors import IntriguingError
from intriguing.report import render as render_module
from intriguing.report.blocks import Figure, Heading, Para
from intriguing.report.html import PNG_SIGNATURE, inside_run, to_html
from intriguing.report.render import SCHEMA, render_report, to_markdown


def _png(path: Path) -> Path:
    path.write_bytes(PNG_SIGNATURE + b"rest")
    return path


@pytest.mark.parametrize("relative", ["/etc/passwd", "../outside.png", "a/../../outside.png"])
def test_figure_paths_outside_the_run_are_refused(tmp_path: Path, relative: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _png(tmp_path / "outside.png")
    with pytest.raises(IntriguingError, match="outside the run directory") as info:
        to_html([Figure(path=relative, caption="x")], run)
    assert "\n" not in str(info.value)


def test_a_symlink_out_of_the_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "fig.png").symlink_to(_png(tmp_path / "secret.png"))
    with pytest.raises(IntriguingError, match="outside the run directory"):
        to_html([Figure(path="fig.png", caption="x")], run)


def test_figures_inside_the_run_are_embedded_and_must_be_png(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    page = to_html([Figure(path="ok.png", caption="x")], tmp_path)
    assert "data:image/png;base64," in page
    (tmp_path / "text.png").write_text("root:x:0:0")
    with pytest.raises(IntriguingError, match="not a PNG"):
        to_html([Figure(path="text.png", caption="x")], tmp_path)
    with pytest.raises(IntriguingError, match="not a relative path"):
        inside_run(tmp_path, 3, "figure")


def _run_dir(tmp_path: Path, doc: object) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(sealed(doc)))  # sealed: the content is checked
    return run


@pytest.mark.parametrize(
    "doc",
    [
        {"schema": SCHEMA},  # every section missing
        {"schema": SCHEMA, "tables": {"table1": {"rows": [{"model": "m", "test_error": "0.07"}]}}},
        {"schema": SCHEMA, "tables": []},
    ],
    ids=["missing key", "string number", "wrong type"],
)
def test_malformed_results_are_one_error_line_and_write_nothing(
    tmp_path: Path, doc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_dir(tmp_path, doc)
    with pytest.raises(IntriguingError, match="malformed") as info:  # load_results' checks
        render_report(run)
    assert "\n" not in str(info.value)
    with monkeypatch.context() as patched:  # past load_results: the rendering itself
        patched.setattr(render_module, "load_results", lambda root: doc)
        with pytest.raises(IntriguingError, match="malformed results") as info:
            render_report(run)
    assert "\n" not in str(info.value)
    assert not (run / "report.md").exists() and not (run / "report.html").exists()
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output


def test_results_json_symlinked_from_outside_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps({"schema": SCHEMA}))
    (run / "results.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(IntriguingError, match="outside the run directory"):
        render_report(run)


def test_markdown_is_escaped_like_html() -> None:
    blocks = [
        Heading("<b>model</b>", 1),
        Para("<script>alert(1)</script> <img src=x onerror=y> &lt;i&gt; <http://x> | a < 1.2% & b"),
        Figure(path="figures/a b).png", caption="<i>cap</i>"),
    ]
    markdown = to_markdown(blocks)
    page_text = to_html(blocks[:2], Path("."))
    for raw in ("<script", "<img", "<b>", "<i>", "<http", "&lt;i&gt;"):
        assert raw not in markdown and raw not in page_text
    assert "&lt;script>" in markdown and "&amp;lt;i&amp;gt;" in markdown
    assert "a < 1.2% & b" in markdown  # plain text stays readable
    assert "\\|" in markdown
    assert "(figures/a%20b%29.png)" in markdown  # the link cannot be closed early


def test_markdown_table_escapes_pipes_and_checks_widths() -> None:
    """The one Markdown table writer (issue 17) escapes ``|`` and refuses ragged rows."""
    import pytest

    from intriguing.report.blocks import markdown_table

    lines = markdown_table(["a|b", "c"], [["x | y", "two\nlines"]])
    assert lines == ["| a\\|b | c |", "|---|---|", "| x \\| y | two lines |"]
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a"], [["1", "2"]])
