"""Issue 16, item 9: every command, driven with generated bad inputs, fails cleanly.

Hypothesis drives every ``intriguing`` command in-process (click's CliRunner) with one bad input at a
time: out-of-range or non-numeric values for every bounded numeric option (found by introspecting
the commands, so a new option is covered automatically), unwritable output paths for every
``--out``/``--json``/``--save``/``--plot``, unknown model names, garbage checkpoints and malformed
run directories. Each must give exit code 2, exactly one ``Error:`` line, no traceback, and leave
no file behind. Any forward pass through a network counts as "work started" and fails the test,
so an accepted bad input is caught at once instead of running an experiment.

``pytest -s`` prints how many bad inputs were tried.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intriguing.cli.main import COMMANDS, cli
from intriguing.cli.validation import OutputPath
from intriguing.models import list_entries

# A valid base command line for each command; one bad input is added to it.
BASES: dict[str, list[str]] = {
    "advtrain": ["advtrain", "--quick", "--dataset", "mnist-5k"],
    "attack": ["attack", "softmax1", "--dataset", "mnist-5k"],
    "classes": ["classes", "--dataset", "mnist-5k"],
    "curves": ["curves", "--dataset", "mnist-5k"],
    "data info": ["data", "info", "--dataset", "mnist-5k"],
    "data download": ["data", "download"],
    "eval": ["eval", "softmax1", "--dataset", "mnist-5k"],
    "figure5": ["figure5", "softmax1", "--dataset", "mnist-5k"],
    "rarity": ["rarity", "--dataset", "mnist-5k"],
    "recover": ["recover", "--dataset", "mnist-5k"],
    "recurrent": ["recurrent", "--dataset", "mnist-5k"],
    "reproduce": ["reproduce", "--quick", "--dataset", "mnist-5k"],
    "spectral": ["spectral", "softmax1"],
    "train": ["train", "softmax1", "--dataset", "mnist-5k"],
    "units": ["units", "softmax1", "--layer", "out", "--dataset", "mnist-5k"],
}
TRIED: Counter[str] = Counter()
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class WorkStartedError(Exception):
    """Raised by any forward pass: a bad input got past validation into real work."""


@pytest.fixture(autouse=True)
def no_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # relative default outputs land (if ever) in tmp_path

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise WorkStartedError("a bad input was accepted and work started")

    monkeypatch.setattr(torch.nn.Module, "__call__", refuse)


@pytest.fixture(scope="module", autouse=True)
def report_count() -> Iterator[None]:
    yield
    print(f"\nbad inputs tried: {sum(TRIED.values())} ({dict(sorted(TRIED.items()))})")


def _command(key: str) -> click.Command:
    group: click.Command = cli
    for part in BASES[key][: 2 if key.startswith("data ") else 1]:
        assert isinstance(group, click.Group)
        sub = group.get_command(click.Context(group), part)
        assert sub is not None
        group = sub
    return group


def test_every_command_is_covered() -> None:
    covered = {key.split()[0] for key in BASES} | {"zoo", "report"}
    assert covered == set(COMMANDS)


def _options(kinds: tuple[type, ...]) -> list[tuple[str, click.Option]]:
    found = []
    for key in sorted(BASES):
        for param in _command(key).params:
            if isinstance(param, click.Option) and isinstance(param.type, kinds):
                found.append((key, param))
    return found


RANGED = _options((click.IntRange, click.FloatRange))
OUTPUTS = _options((OutputPath,))
# --data-dir is documented as ignored by --dataset mnist-5k (load_mnist's contract): not bad there.
INPUTS = [
    (key, param)
    for key, param in _options((click.Path,))
    if not (param.name == "data_dir" and "mnist-5k" in BASES[key])
]


def _check(argv: list[str], where: Path, what: str) -> None:
    TRIED[what] += 1
    before = sorted(p.name for p in where.iterdir())
    result = CliRunner().invoke(cli, argv)
    context = f"{argv!r}: {result.output!r}"
    assert not isinstance(result.exception, WorkStartedError), context
    assert result.exit_code == 2, context
    assert "Traceback" not in result.output, context
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, context
    assert sorted(p.name for p in where.iterdir()) == before, context  # nothing written


def _out_of_range(param: click.Option) -> st.SearchStrategy[str]:
    kind = param.type
    assert isinstance(kind, click.IntRange | click.FloatRange)
    bad: list[st.SearchStrategy[str]] = [
        st.sampled_from(["", "abc", "1,2", "--", "0x10", "1e9999x", "None"]),
    ]
    if isinstance(kind, click.IntRange):
        bad.append(st.sampled_from(["1.5", "nan", "inf", "1e9"]))
    else:
        bad.append(st.sampled_from(["nan", "inf", "-inf"]))
    low, high = kind.min, kind.max
    if low is not None:
        below = st.integers(1, 10**12).map(lambda d: low - d)
        if kind.min_open:
            below = st.just(low) | below
        bad.append(below.map(str))
    if high is not None:
        above = st.integers(1, 10**12).map(lambda d: high + d)
        if kind.max_open:
            above = st.just(high) | above
        bad.append(above.map(str))
    return st.one_of(*bad)


@st.composite
def _bad_numeric(draw: st.DrawFn) -> tuple[str, str, str]:
    key, param = draw(st.sampled_from(RANGED))
    return key, param.opts[0], draw(_out_of_range(param))


@SETTINGS
@given(case=_bad_numeric())
def test_numeric_options_out_of_range(case: tuple[str, str, str], tmp_path: Path) -> None:
    key, option, value = case
    _check([*BASES[key], f"{option}={value}"], tmp_path, "numeric")


def _bad_paths(where: Path, kind: str) -> st.SearchStrategy[str]:
    afile = where / "a-file"
    adir = where / "a-dir"
    common = [
        str(afile / "x.json"),
        str(afile / "sub" / "deeper" / "x"),
        "/proc/intriguing/x.json",
        "/sys/x",
        "/dev/x",
        str(where / ("x" * 300)),
        "",
    ]
    if kind == "file":
        common += [str(adir), str(where / "missing-parent" / "x.json"), str(where)]
    else:
        common += [str(afile)]
    names = st.text(st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1, max_size=20)
    return st.sampled_from(common) | names.map(lambda n: str(afile / n))


@st.composite
def _bad_output(draw: st.DrawFn, where: Path) -> tuple[str, str, str]:
    key, param = draw(st.sampled_from(OUTPUTS))
    assert isinstance(param.type, OutputPath)
    return key, param.opts[0], draw(_bad_paths(where, param.type.kind))


@SETTINGS
@given(data=st.data())
def test_unwritable_outputs(data: st.DataObject, tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    (tmp_path / "a-dir").mkdir(exist_ok=True)
    key, option, value = data.draw(_bad_output(tmp_path))
    _check([*BASES[key], f"{option}={value}"], tmp_path, "output path")


KNOWN = {name.lower() for e in list_entries() for name in (e.name, *e.aliases)}
MODEL_COMMANDS = ["attack", "train", "eval", "spectral", "figure5", "units"]


@SETTINGS
@given(
    command=st.sampled_from(MODEL_COMMANDS),
    name=st.text(
        st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=30
    ).filter(lambda n: n.strip().lower() not in KNOWN and not n.startswith("-")),
)
def test_unknown_model_names(command: str, name: str, tmp_path: Path) -> None:
    base = BASES[command]
    _check([base[0], name, *base[2:]], tmp_path, "model name")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@SETTINGS
@given(
    content=st.binary(max_size=200)
    | _JSON.map(lambda d: json.dumps({"schema": "intriguing.reproduce/1", "tables": d}).encode())
    | _JSON.map(lambda d: json.dumps(d).encode())
)
def test_malformed_run_directories(content: bytes, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_bytes(content)
    _check(["report", str(run)], run, "results.json")


@SETTINGS
@given(
    content=st.binary(max_size=300),
    sidecar=_JSON.map(lambda d: {"model": "softmax1", "config": {}, "weights_sha256": "0", "x": d})
    | _JSON,
)
def test_garbage_checkpoints(content: bytes, sidecar: Any, tmp_path: Path) -> None:
    weights = tmp_path / "ckpt.safetensors"
    weights.write_bytes(content)
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    _check(["eval", "--checkpoint", str(weights)], tmp_path, "checkpoint")


@st.composite
def _bad_input(draw: st.DrawFn, where: Path) -> tuple[str, str, str]:
    key, param = draw(st.sampled_from(INPUTS))
    kind = draw(st.sampled_from(["garbage file", "missing", "empty dir"]))
    if kind == "missing":
        return key, param.opts[0], str(where / "does-not-exist" / "x")
    if kind == "empty dir":
        path = where / "empty-dir"
        path.mkdir(exist_ok=True)
        return key, param.opts[0], str(path)
    suffix = draw(st.sampled_from([".safetensors", ".npz", ".pt", ".json", ".txt", ".png", ""]))
    path = where / f"garbage{suffix}"
    path.write_bytes(draw(st.binary(min_size=0, max_size=300)))
    return key, param.opts[0], str(path)


@SETTINGS
@given(data=st.data())
def test_bad_input_files(data: st.DataObject, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    key, option, value = data.draw(_bad_input(inputs))
    _check([*BASES[key], f"{option}={value}"], tmp_path, "input file")
