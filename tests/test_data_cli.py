"""``intriguing data info`` / ``intriguing data download`` through click's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from intriguing.cli.main import cli
from intriguing.data.files import MNIST_FILES
from intriguing.paths import DATA_DIR_ENV
from test_data_fakes import serve_directory


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["data", *args])


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, one ``Error:`` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def test_info_real_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    result = run("info", "--data-dir", str(mnist_dir), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert f"location:  {mnist_dir}" in result.stdout
    assert "found via: data_dir" in result.stdout
    assert result.stdout.count(" ok") == 4
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in result.stdout
    assert "train   60000   5923  6742" in result.stdout
    assert "p1      30000" in result.stdout
    info = json.loads(out.read_text())
    assert info["splits"]["test"]["class_counts"][1] == 1135
    assert info["identity"]["dataset"] == "mnist"
    assert result.stderr == ""


def test_info_mnist5k_prints_banner_on_stderr() -> None:
    result = run("info", "--dataset", "mnist-5k")
    assert result.exit_code == 0, result.output
    assert "will NOT match the paper" in result.stderr
    assert "train    4000    400" in result.stdout


def test_info_empty_data_dir_is_a_user_error(tmp_path: Path) -> None:
    assert_user_error(run("info", "--data-dir", str(tmp_path)), str(tmp_path), "lacks")


def test_info_reports_wrong_checksum(mnist_dir: Path, tmp_path: Path) -> None:
    for spec in MNIST_FILES:
        shutil.copy(mnist_dir / spec.gz_name, tmp_path / spec.gz_name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    result = run("info", "--data-dir", str(tmp_path))
    assert_user_error(result, "t10k-labels-idx1-ubyte.gz", "WRONG")
    assert "WRONG (expected ec29112dd5afa0611ce80d1b7f02629c)" in result.stdout


def test_info_does_not_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    assert_user_error(run("info"), "intriguing data download", "--data-dir", DATA_DIR_ENV)


def test_unknown_dataset_is_a_usage_error() -> None:
    assert run("info", "--dataset", "cifar").exit_code == 2


def test_download_into_dir(mnist_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with serve_directory(mnist_dir) as (url, _):
        result = run("download", "--dir", str(dest), "--mirror", url)
    assert result.exit_code == 0, result.output
    assert f"MNIST is ready in {dest}" in result.stdout
    assert sorted(p.name for p in dest.iterdir()) == sorted(s.gz_name for s in MNIST_FILES)
    assert run("info", "--data-dir", str(dest)).exit_code == 0


def test_download_failure_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve_directory(empty) as (url, _):
        result = run("download", "--dir", str(tmp_path / "dest"), "--mirror", url)
    assert_user_error(result, "could not download", "HTTP 404", "--data-dir")
    assert "warning: download of http://127.0.0.1:" in result.stderr
