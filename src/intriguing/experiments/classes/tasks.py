"""Tasks: MNIST digits mapped to 2, 5 or 10 task classes (``3v8``, ``0vrest``, ``0-4``, ``all``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from intriguing.errors import InvalidInputError

NUM_DIGITS = 10
DEFAULT_TASKS: tuple[str, ...] = ("3v8", "0vrest", "0-4", "all")
ALL_TASK = "all"


@dataclass(frozen=True)
class Task:
    """A classification task on MNIST digits.

    Attributes:
        name: the task's name (``"3v8"``, ``"0vrest"``, ``"0-4"``, ``"all"``, ...).
        groups: ``groups[j]`` are the digits of task class ``j``; digits in no group are dropped.
        class_names: one short name per task class.
        description: one line for reports.
    """

    name: str
    groups: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...]
    description: str

    @property
    def num_classes(self) -> int:
        """K, the number of task classes (>= 2)."""
        return len(self.groups)

    @property
    def digits(self) -> tuple[int, ...]:
        """The digits the task uses, sorted."""
        return tuple(sorted(d for group in self.groups for d in group))

    def mapping(self) -> torch.Tensor:
        """``(10,)`` int64: the task class of each digit, -1 for digits the task drops."""
        table = torch.full((NUM_DIGITS,), -1, dtype=torch.int64)
        for cls, group in enumerate(self.groups):
            table[list(group)] = cls
        return table

    def task_labels(self, digits: torch.Tensor) -> torch.Tensor:
        """Task labels ``(N,)`` of MNIST labels ``digits`` ``(N,)`` (-1 for dropped digits)."""
        return self.mapping()[digits]

    def subset(
        self, images: torch.Tensor, digits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices ``(M,)`` of the images whose digit the task uses, and their task labels ``(M,)``."""
        labels = self.task_labels(digits)
        index = torch.nonzero(labels >= 0).flatten()
        return index, labels[index]

    def other_digits(self, digit: int) -> tuple[int, ...]:
        """Digits of every task class except ``digit``'s: the targets a 10-class model must reach
        for an image of ``digit`` to change its *task* class."""
        own = int(self.mapping()[digit])
        if own < 0:
            raise InvalidInputError(f"digit {digit} is not part of task {self.name!r}")
        return tuple(d for cls, group in enumerate(self.groups) if cls != own for d in group)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (part of step parameters)."""
        return {
            "name": self.name,
            "groups": [list(g) for g in self.groups],
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "description": self.description,
        }


def pair_task(a: int, b: int) -> Task:
    """Digit ``a`` (class 0) against digit ``b`` (class 1)."""
    return Task(f"{a}v{b}", ((a,), (b,)), (str(a), str(b)), f"digit {a} vs digit {b}")


def one_vs_rest_task(d: int) -> Task:
    """Digit ``d`` (class 0) against the nine other digits (class 1)."""
    rest = tuple(x for x in range(NUM_DIGITS) if x != d)
    return Task(f"{d}vrest", ((d,), rest), (str(d), f"not {d}"), f"digit {d} vs the nine others")


def range_task(a: int, b: int) -> Task:
    """Digits ``a..b`` (inclusive), each its own class; ``"0-9"`` is the full MNIST problem."""
    digits = tuple(range(a, b + 1))
    name = ALL_TASK if (a, b) == (0, 9) else f"{a}-{b}"
    return Task(
        name,
        tuple((d,) for d in digits),
        tuple(str(d) for d in digits),
        f"digits {a}-{b} ({len(digits)} classes)" if name != ALL_TASK else "all 10 digits",
    )


#: Named tasks; other names of the forms AvB, Dvrest and A-B are parsed by :func:`get_task`.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (pair_task(3, 8), pair_task(4, 9), one_vs_rest_task(0), range_task(0, 4))
}
TASKS[ALL_TASK] = range_task(0, 9)

_PAIR = re.compile(r"^(\d)v(\d)$")
_REST = re.compile(r"^(\d)vrest$")
_RANGE = re.compile(r"^(\d)-(\d)$")
TASK_HELP = "AvB (e.g. 3v8), Dvrest (e.g. 0vrest), A-B with A < B (e.g. 0-4) or all"


def get_task(name: str) -> Task:
    """The task called ``name``: a key of :data:`TASKS` or a name of the form ``AvB``, ``Dvrest``
    or ``A-B`` (digits).

    Raises:
        InvalidInputError: an unknown or malformed name.
    """
    key = str(name).strip()
    if key in TASKS:
        return TASKS[key]
    if match := _PAIR.match(key):
        a, b = int(match[1]), int(match[2])
        if a != b:
            return pair_task(a, b)
    elif match := _REST.match(key):
        return one_vs_rest_task(int(match[1]))
    elif match := _RANGE.match(key):
        a, b = int(match[1]), int(match[2])
        if a < b:
            return range_task(a, b)
    raise InvalidInputError(f"unknown task {name!r}; use {TASK_HELP}")


def parse_tasks(names: str | Sequence[str]) -> list[Task]:
    """Tasks from a comma-separated string or a list of names, duplicates refused.

    Raises:
        InvalidInputError: no task, an unknown name or a repeated task.
    """
    given = names.split(",") if isinstance(names, str) else list(names)
    items = [str(item).strip() for item in given if str(item).strip()]
    tasks = [get_task(item) for item in items]
    if not tasks:
        raise InvalidInputError(f"no task given; name at least one: {TASK_HELP}")
    _refuse_repeats(items, tasks)
    return tasks


def _refuse_repeats(items: list[str], tasks: list[Task]) -> None:
    """Refuse a task listed twice, by the same name or another one for the same classes (``3v8``
    and ``8v3``, ``0-1`` and ``0v1``, ``0-9`` and ``all``): it would be trained and attacked twice."""
    seen: dict[frozenset[frozenset[int]], str] = {}
    for item, task in zip(items, tasks, strict=True):
        key = frozenset(frozenset(group) for group in task.groups)
        if key not in seen:
            seen[key] = item
            continue
        first = seen[key]
        what = (
            f"task {item!r} is listed twice"
            if first == item
            else f"tasks {first!r} and {item!r} are the same task (the same classes), listed twice"
        )
        raise InvalidInputError(f"{what}; name each task once")
