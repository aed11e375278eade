"""The model zoo: the MNIST models of Szegedy et al. 2014 (Table 1, Table 3 and "Conv") and three
recurrent classifiers (issue 9: the critics' question), by name.

>>> from intriguing.models import list_entries, build_model, get_entry
>>> names = [e.name for e in list_entries()]
>>> names[:10]
['softmax1', 'softmax2', 'softmax3', 'N100-100-10', 'N200-200-10', 'AE400-10', 'Conv', 'M1', "M1'", 'M2']
>>> names[10:]
['LSTM-rows', 'GRU-rows', 'Feedback']
>>> get_entry("M1p").train_split          # aliases work; M1' is trained on P1
'p1'

Every model maps (N, 1, 28, 28) images in [0, 1] to logits (N, 10) and is an ``nn.Sequential`` of
named layers; :func:`intriguing.training.load_model` returns a trained one. Register your own with
:func:`register_model` (see :mod:`intriguing.models.registry`).
"""

from intriguing.errors import UnknownModelError
from intriguing.models import recurrent as _recurrent  # noqa: F401  (issue #9 recurrent models)
from intriguing.models import zoo as _zoo  # noqa: F401  (registers the paper's models)
from intriguing.models.architectures import (
    autoencoder_softmax,
    conv_net,
    linear_softmax,
    sigmoid_mlp,
)
from intriguing.models.registry import (
    ZooEntry,
    build_model,
    get_entry,
    list_entries,
    model_names,
    register_model,
    unregister_model,
)
from intriguing.models.user import load_user_model

__all__ = [
    "UnknownModelError",
    "ZooEntry",
    "autoencoder_softmax",
    "build_model",
    "conv_net",
    "get_entry",
    "linear_softmax",
    "list_entries",
    "load_user_model",
    "model_names",
    "register_model",
    "sigmoid_mlp",
    "unregister_model",
]
