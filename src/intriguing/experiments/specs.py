"""The paper's MNIST experiments (Szegedy et al. 2014, §4.2) declared as data.

One frozen dataclass per table / figure says which models, which split, how many examples and which
noise / amplification rows; :class:`ReproduceConfig` bundles them with the attack settings, the shard
size and the seed. :func:`make_spec` returns one of the named sizes:

========  ==================  ===================  ==============================================
size      Tables 1-2 (train)  Tables 3-4 (test)    what it is for
========  ==================  ===================  ==============================================
tiny      2 models x 10       2 models x 10        the test suite only (seconds, cheap attack)
quick     6 models x 100      3 models x 100       a first look; <= 5 min on 2 cores, models cached
default   6 models x 5000     3 models x 5000      the documented reproduction (<= 60 min)
full      6 models x 60000    3 models x 10000     the paper's full training and test sets
========  ==================  ===================  ==============================================

Beside the §4.2 tables a run holds the unit analysis of §3 (:class:`UnitsRunConfig`: the last hidden layer
of Conv and N100-100-10 on the test set; tiny: softmax1's pixel layer, the documented pixel-space
control; quick: 25 directions of the natural and random families on the first 5000 test images)
and the spectral analysis of §4.3 (:class:`SpectralRunConfig`: per-layer frame bounds of every
model, and the certified-vs-attack sandwich of softmax1 and N100-100-10).

"x 100" means the first 100 examples of the split that the model classifies correctly (Table 1's
"distortion to reach 0% accuracy": each one must end misclassified). The Gaussian-noise rows use
the first ``noise_examples`` images of the same split whatever the models say.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from intriguing.attacks.lbfgs_config import LBFGSConfig
from intriguing.errors import InvalidInputError

Size = Literal["tiny", "quick", "default", "full"]
Dataset = Literal["mnist", "mnist-5k"]
Split = Literal["train", "test", "p1", "p2"]
ExactMethod = Literal["power", "lanczos", "none"]
SIZES: tuple[str, ...] = get_args(Size)


def check_choice(name: str, value: str, vocabulary: Any) -> None:
    """InvalidInputError unless ``value`` is one of the ``Literal`` type ``vocabulary``'s values."""
    allowed = get_args(vocabulary)
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


TABLE1_MODELS: tuple[str, ...] = (
    "softmax1",
    "softmax2",
    "softmax3",
    "N100-100-10",
    "N200-200-10",
    "AE400-10",
)
TABLE3_MODELS: tuple[str, ...] = ("M1", "M1'", "M2")
ALL_EXAMPLES = 10**9  # "every example of the split" (the stop index is clipped to what exists)
# --full: 10000-image shards through 1024 optimiser slots. Each attack call ends in a drain of steps
# over a few slots that cost nearly as much as full ones, so fewer, longer calls are faster (issue 18;
# benchmarks/shard_size.py, docs/reproduce.md "Full size": 11 min 47 s -> 10 min 13 s-10 min 47 s).
FULL_SHARD_SIZE = 10000
FULL_BATCH_SIZE = 1024


# Set per attack step by the run (the mode of the table, a derived target seed), not by the spec.
PER_STEP_ATTACK_FIELDS = ("mode", "target", "seed")


@dataclass(frozen=True)
class AttackConfig(LBFGSConfig):
    """Settings of :class:`intriguing.attacks.LBFGS` used for every attack of a run (section 4.1).

    The attack's own :class:`~intriguing.attacks.LBFGSConfig` (same fields, defaults and checks,
    never re-declared); the ``tiny`` size lowers some so tests run in seconds. ``mode``, ``target``
    and ``seed`` are set by each attack step (``PER_STEP_ATTACK_FIELDS``) and must stay at their
    defaults here. Every other field is in :meth:`kwargs`, hence in each attack step's fingerprint.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        default = LBFGSConfig()
        for name in PER_STEP_ATTACK_FIELDS:
            if getattr(self, name) != getattr(default, name):
                raise InvalidInputError(f"attack.{name} is set per attack step; leave it unset")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``LBFGS(...)`` (single-threaded, no nested progress bar): every
        field but ``PER_STEP_ATTACK_FIELDS``."""
        settings = dataclasses.asdict(self)
        for name in PER_STEP_ATTACK_FIELDS:
            del settings[name]
        return {**settings, "threads": 1, "progress": False}


@dataclass(frozen=True)
class Table1Config:
    """Table 1: errors and average minimum distortion; the examples of Table 2 come from here too.

    Attributes:
        models: zoo names attacked (rows of Tables 1 and 2).
        split: the split distorted (the paper: the training set).
        n_examples: first correctly classified examples attacked per model.
        targeted: also run the targeted attack toward a random class (reported beside).
    """

    models: tuple[str, ...] = TABLE1_MODELS
    split: Split = "train"
    n_examples: int = 1000
    targeted: bool = True

    def __post_init__(self) -> None:
        check_choice("table1.split", self.split, Split)


@dataclass(frozen=True)
class Table2Config:
    """Table 2: cross-model error of Table 1's examples plus Gaussian-noise rows.

    Attributes:
        noise_stddevs: per-pixel stddevs of the noise rows (the paper: 0.1 and 0.3).
        noise_examples: images of Table 1's split perturbed per noise row.
    """

    noise_stddevs: tuple[float, ...] = (0.1, 0.3)
    noise_examples: int = 1000


@dataclass(frozen=True)
class Table3Config:
    """Table 3: models trained on the disjoint halves P1 / P2; the test set is distorted.

    Attributes:
        models: zoo names (the paper: M1, M1', M2).
        split: the split distorted (the paper: the test set).
        n_examples: first correctly classified examples attacked per model.
    """

    models: tuple[str, ...] = TABLE3_MODELS
    split: Split = "test"
    n_examples: int = 1000

    def __post_init__(self) -> None:
        check_choice("table3.split", self.split, Split)


@dataclass(frozen=True)
class Table4Config:
    """Table 4: transfer of Table 3's examples, raw and amplified, against Gaussian noise.

    Attributes:
        noise_stddevs: the noise rows (the paper: 0.06 and 0.1).
        amplify_stddev: per-pixel stddev the perturbations are rescaled to (the paper: 0.1).
        noise_examples: images of Table 3's split perturbed per noise row.
    """

    noise_stddevs: tuple[float, ...] = (0.06, 0.1)
    amplify_stddev: float = 0.1
    noise_examples: int = 1000


@dataclass(frozen=True)
class Figure7Config:
    """Figure 7: originals beside their adversarial examples, and heavy Gaussian noise.

    Attributes:
        models: two Table 1 models whose untargeted examples are shown (the paper's Figure 7a
            is a linear softmax, 7b the 200-200-10 sigmoid network: softmax1, N200-200-10).
        n_show: image pairs shown per model.
        noise_stddev: stddev of the comparison noise (the paper: 1, leaving 51% accuracy).
        noise_examples: test images on which the noise's accuracy is measured.
    """

    models: tuple[str, ...] = ("softmax1", "N200-200-10")
    n_show: int = 8
    noise_stddev: float = 1.0
    noise_examples: int = 1000


@dataclass(frozen=True)
class UnitsRunConfig:
    """§3: single units against random directions (see docs/units.md).

    Attributes:
        models: zoo names analysed.
        layers: one layer name per model, or empty for each zoo entry's ``hidden_layer``.
        split: the image set (the paper: the MNIST test set).
        n_images: first images of the split used (clipped to the split).
        families, k, n_directions, n_null, n_resamples, alphas: as in
            :class:`intriguing.analysis.units.UnitsConfig` (the seed is derived from the run's).
    """

    models: tuple[str, ...] = ("Conv", "N100-100-10")
    layers: tuple[str, ...] = ()
    split: Split = "test"
    n_images: int = ALL_EXAMPLES
    families: tuple[str, ...] = ("natural", "random", "rotation", "pca", "classmean")
    k: int = 8
    n_directions: int = 100
    n_null: int = 10000
    n_resamples: int = 9999
    alphas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        check_choice("units.split", self.split, Split)

    def layer_of(self, model: str) -> str | None:
        """The layer analysed for ``model`` (None: the zoo entry's last hidden layer)."""
        return self.layers[self.models.index(model)] if self.layers else None


@dataclass(frozen=True)
class SpectralRunConfig:
    """§4.3: frame bounds of every layer (Table 5 analogue) and the certified/attack sandwich.

    Attributes:
        extra_models: bounded besides every model of the run and of the unit analysis.
        sandwich_models: models whose certified radii are compared with attack distortions: on the
            examples of their Table 1 untargeted attack when they have one, else on the first
            ``sandwich_examples`` test images with a fresh untargeted attack (same settings).
        sandwich_examples: images of that fresh attack.
        exact_method, power_iterations: how zero-padded convolutions' exact norms are found
            (:class:`intriguing.analysis.lipschitz.BoundConfig`).
    """

    extra_models: tuple[str, ...] = ()
    sandwich_models: tuple[str, ...] = ("softmax1", "N100-100-10")
    sandwich_examples: int = 100
    exact_method: ExactMethod = "power"
    power_iterations: int = 2000

    def __post_init__(self) -> None:
        check_choice("spectral.exact_method", self.exact_method, ExactMethod)
        if self.sandwich_examples < 1:
            raise InvalidInputError(
                f"spectral.sandwich_examples must be >= 1, got {self.sandwich_examples}"
            )


@dataclass(frozen=True)
class ReproduceConfig:
    """Everything a ``reproduce`` run computes; the run's results depend only on this and the data.

    ``noise_clip``: clip the Gaussian-noise and amplified rows (Tables 2 and 4, Figure 7) to [0, 1].
    The default leaves them unclipped: the paper does not say, and on full MNIST (default size) its
    18 noise cells of Tables 2 and 4 are matched by unclipped noise within 0.1-4.8 points (clipped:
    up to 55 points off), and Figure 7's 51% accuracy under stddev-1 noise by 43-45% (clipped:
    18-22%). See docs/reproduce.md.
    """

    size: str
    seed: int = 0
    dataset: Dataset = "mnist"
    shard_size: int = 250
    noise_clip: bool = False
    attack: AttackConfig = field(default_factory=AttackConfig)
    table1: Table1Config = field(default_factory=Table1Config)
    table2: Table2Config = field(default_factory=Table2Config)
    table3: Table3Config = field(default_factory=Table3Config)
    table4: Table4Config = field(default_factory=Table4Config)
    figure7: Figure7Config = field(default_factory=Figure7Config)
    units: UnitsRunConfig = field(default_factory=UnitsRunConfig)
    spectral: SpectralRunConfig = field(default_factory=SpectralRunConfig)

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, Dataset)
        if self.shard_size < 1:
            raise InvalidInputError(f"shard_size must be >= 1, got {self.shard_size}")
        missing = [m for m in self.figure7.models if m not in self.table1.models]
        if missing:
            raise InvalidInputError(f"Figure 7 models {missing} must be among Table 1's models")
        if self.units.layers and len(self.units.layers) != len(self.units.models):
            raise InvalidInputError(
                f"units.layers names {len(self.units.layers)} layers for "
                f"{len(self.units.models)} models; give one per model or none"
            )

    def models(self) -> tuple[str, ...]:
        """Every model the run needs, Table 1's first, without repeats."""
        return tuple(dict.fromkeys((*self.table1.models, *self.table3.models)))

    def spectral_models(self) -> tuple[str, ...]:
        """Models whose layers are bounded: the run's, the unit analysis's, then the extras."""
        return tuple(
            dict.fromkeys(
                (
                    *self.models(),
                    *self.units.models,
                    *self.spectral.extra_models,
                    *self.spectral.sandwich_models,
                )
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in results.json as ``config``)."""
        return dataclasses.asdict(self)


QUICK_UNITS = UnitsRunConfig(
    n_images=5000,
    families=("natural", "random"),
    n_directions=25,
    n_null=1000,
    n_resamples=999,
    alphas=(),
)
TINY_UNITS = UnitsRunConfig(
    models=("softmax1",),
    layers=("flatten",),
    families=("natural", "random"),
    n_directions=8,
    n_null=200,
    n_resamples=99,
    alphas=(),
)


def _sized(size: str, n: int, noise: int, seed: int, dataset: str, **extra: Any) -> ReproduceConfig:
    return ReproduceConfig(
        size=size,
        seed=seed,
        dataset=cast(Dataset, dataset),  # checked by ReproduceConfig
        table1=Table1Config(n_examples=n),
        table2=Table2Config(noise_examples=noise),
        table3=Table3Config(n_examples=n),
        table4=Table4Config(noise_examples=noise),
        figure7=Figure7Config(noise_examples=noise),
        **extra,
    )


def make_spec(size: str = "default", *, seed: int = 0, dataset: str = "mnist") -> ReproduceConfig:
    """The named size of the reproduction (see the module docstring).

    Raises:
        InvalidInputError: an unknown size.
    """
    if size == "tiny":
        return ReproduceConfig(
            size="tiny",
            seed=seed,
            dataset=cast(Dataset, dataset),  # checked by ReproduceConfig
            shard_size=4,
            attack=AttackConfig(search_steps=5, max_iter=30, c_rtol=0.2, refine=False),
            table1=Table1Config(models=("softmax1", "softmax2"), n_examples=10),
            table2=Table2Config(noise_examples=50),
            table3=Table3Config(models=("softmax2", "softmax3"), n_examples=10),
            table4=Table4Config(noise_examples=50),
            figure7=Figure7Config(models=("softmax1", "softmax2"), n_show=4, noise_examples=50),
            units=TINY_UNITS,
            spectral=SpectralRunConfig(
                sandwich_models=("softmax1", "softmax3"), sandwich_examples=10
            ),
        )
    if size == "quick":
        return _sized("quick", 100, 1000, seed, dataset, shard_size=100, units=QUICK_UNITS)
    if size == "default":
        return _sized("default", 5000, 10000, seed, dataset, shard_size=500)
    if size == "full":
        return _sized(
            "full",
            ALL_EXAMPLES,
            ALL_EXAMPLES,
            seed,
            dataset,
            shard_size=FULL_SHARD_SIZE,
            attack=AttackConfig(batch_size=FULL_BATCH_SIZE),
        )
    raise InvalidInputError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


# The names before issue 17 (one suffix, ``...Config``, for every settings dataclass).
AttackSettings = AttackConfig
Table1Spec = Table1Config
Table2Spec = Table2Config
Table3Spec = Table3Config
Table4Spec = Table4Config
Figure7Spec = Figure7Config
UnitsSpec = UnitsRunConfig
SpectralSpec = SpectralRunConfig
ReproduceSpec = ReproduceConfig
