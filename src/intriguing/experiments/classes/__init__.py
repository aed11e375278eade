"""Fewer classes: are adversarial examples harder to find when a classifier has few classes?

Issue #9, item 4, from the critique's open question "if the number of classes is small, will the
problem be less severe?" (``paper/summary-and-critique.txt``, "Thoughts"). The paper (§4.2) attacks
10-class MNIST models only; here the same model families are trained on MNIST tasks with 2, 5 and
10 classes, attacked with the paper's box-constrained L-BFGS (§4.1) and compared.

Tasks (:func:`get_task`) map MNIST digits to task classes: ``"3v8"`` (digit 3 -> 0, digit 8 -> 1,
other digits dropped), ``"0vrest"`` (0 -> 0, every other digit -> 1), ``"0-4"`` (digits 0..4 -> 0..4),
``"all"`` (the 10 digits). Per task four models are trained on the task's training images
(:data:`FAMILIES`): a linear softmax (``softmax``), a sigmoid 100-100 net (``mlp``), a linear probe on
the frozen encoder of the zoo's AE400-10 (``ae-probe``, like the paper's QuocNet car classifier) and a
second sigmoid net with other sizes and seed (``mlp-b``, only a transfer target). Every model has as
many output logits as the task has classes.

Measured per task and attacked family (steps of a resumable graph, :mod:`intriguing.experiments.graph`):

- ``train/<task>/<family>``: the model (weights in the step's artifact folder) and its test error;
- ``attack/<task>/<family>``: untargeted L-BFGS on the first ``n`` task test images the model
  classifies correctly: the minimum distortion (RMS per pixel); for the linear softmax also the exact
  optimum (:func:`intriguing.attacks.exact_linear_attack`, a certified QP);
- ``transfer/<task>/<family>``: the share of those adversarial examples that the task's other models
  misclassify (counted on the images they classify correctly when clean);
- ``restricted/<task>/<family>`` (tasks with fewer than 10 classes, when ``all`` is run): the 10-class
  model of the same family attacked on the same images, once untargeted and once restricted to the
  digits of the task's other classes. This separates the two ways a task changes the problem: fewer
  alternatives for the attack (10-class model, restricted vs untargeted) and a model trained for the
  task (task model vs 10-class restricted).

Images are float32 ``(N, 1, 28, 28)`` in [0, 1]; distortion is the paper's ``sqrt(sum r^2 / 784)``.

The package's parts: :mod:`.tasks` (digit -> task class maps), :mod:`.families` (the models trained
per task), :mod:`.config` (:class:`ClassesConfig`), :mod:`.bench` (per-process data and models),
:mod:`.steps` (the step functions and their graph), :mod:`.summary` (``results.json`` and its
intervals) and :mod:`.run` (:func:`run_classes`). The report is :mod:`intriguing.report.classes`.
"""

from intriguing.experiments.classes.bench import Bench, EncoderLoader, load_encoder
from intriguing.experiments.classes.config import ClassesConfig, train_config
from intriguing.experiments.classes.families import (
    DEFAULT_FAMILIES,
    FAMILIES,
    Family,
    build_task_model,
    check_families,
)
from intriguing.experiments.classes.run import run_classes
from intriguing.experiments.classes.steps import (
    attack_step,
    build_steps,
    restricted_step,
    train_step,
    transfer_step,
)
from intriguing.experiments.classes.summary import (
    SCHEMA,
    mean_median_ci,
    ratio_of_means_ci,
    summarize,
    wilson,
)
from intriguing.experiments.classes.tasks import (
    ALL_TASK,
    DEFAULT_TASKS,
    TASK_HELP,
    TASKS,
    Task,
    get_task,
    parse_tasks,
)
from intriguing.experiments.steps import predict

__all__ = [
    "ALL_TASK",
    "DEFAULT_FAMILIES",
    "DEFAULT_TASKS",
    "FAMILIES",
    "SCHEMA",
    "TASKS",
    "TASK_HELP",
    "Bench",
    "ClassesConfig",
    "EncoderLoader",
    "Family",
    "Task",
    "attack_step",
    "build_steps",
    "build_task_model",
    "check_families",
    "get_task",
    "load_encoder",
    "mean_median_ci",
    "parse_tasks",
    "predict",
    "ratio_of_means_ci",
    "restricted_step",
    "run_classes",
    "summarize",
    "train_config",
    "train_step",
    "transfer_step",
    "wilson",
]
