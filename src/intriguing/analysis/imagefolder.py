"""A folder of images as an image set for unit analysis (the ImageNet-style path of §3, Figures 3-4).

The paper's Figures 3 and 4 take the AlexNet validation set as the "image set". Here any folder of
image files (searched recursively, sorted by relative path) can play that role:

- images are decoded lazily with Pillow, batch by batch, to float32 ``(B, C, H, W)`` in ``[0, 1]``
  (``C = 3`` for ``mode="RGB"``, ``1`` for ``"L"``); 16-bit PNGs (``I;16``) are scaled by 65535,
  palette images go through their palette, alpha is dropped; a photo whose EXIF orientation tag
  says it is stored sideways or mirrored is turned upright first; images over :data:`MAX_PIXELS` pixels
  are refused before they are decoded;
- with ``size=S`` each image is resized so that its shorter side is ``S`` and centre-cropped to
  ``S x S``; without it all images must already share one size;
- an optional labels file maps images to classes, one ``<relative path or file name> <label>`` per
  line: the label is the line's last field (after a comma, tab or space), so names may hold
  spaces; a ``#`` at the start of a line or after a space starts a comment. Labels may be class indices (0, 1, 2, ...) or
  names; names are numbered in sorted order. Numbers that are not class indices (``7.0``, ``-1``)
  and an image given two labels are refused; a bare file name is matched only where it is unique
  in the folder. Without a labels file, a folder laid out as torchvision's
  ImageFolder (every image exactly one subfolder deep) takes its labels from the subfolder names
  (:func:`folder_labels`).

The label-free metric needs a pixel embedding of every image; :meth:`ImageFolderSource.thumbnails`
gives small ``side x side`` versions so that it stays cheap for large sets.
"""

from __future__ import annotations

import os
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from intriguing.errors import DataError, InvalidInputError
from intriguing.progress import track

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
MODES: tuple[str, ...] = ("RGB", "L")
MAX_PIXELS = 50_000_000  # per image; Pillow's own bomb check starts at 89M (warning) / 179M (error)
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by their path relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{folder}: not a directory; pass a folder of images")
    files = sorted(
        (p for p in _walk(root) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise InvalidInputError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _walk(root: Path) -> Iterator[Path]:
    """Every file below ``root``, following folder symlinks (a class folder may be a link, as
    torchvision's ImageFolder allows) but never into a folder already visited (a link loop)."""
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = [name for name in subfolders if not _hidden(name)]
        for name in files:
            if not _hidden(name):
                yield Path(folder) / name


def _hidden(name: str) -> bool:
    """Names a folder listing skips: hidden ones (``.ipynb_checkpoints``, macOS's ``._x.png``
    resource forks, ``.DS_Store``) and the ``__MACOSX`` folder of zip archives."""
    return name.startswith(".") or name == "__MACOSX"


class ImageFolderSource:
    """Lazily decoded images of a folder; an :class:`~intriguing.analysis.activations.ImageSource`."""

    def __init__(
        self, folder: str | os.PathLike[str], *, size: int | None = None, mode: str = "RGB"
    ) -> None:
        if mode not in MODES:
            raise InvalidInputError(
                f"unknown image mode {mode!r}; choose one of {', '.join(MODES)}"
            )
        if size is not None and size < 1:
            raise InvalidInputError(f"image size must be at least 1, got {size}")
        self.root = Path(folder)
        self.files = find_images(folder)
        self.size = size
        self.mode = mode
        self._shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def keep_first(self, n: int) -> None:
        """Keep only the first ``n`` images (in the sorted order of :attr:`names`)."""
        self.files = self.files[:n]

    @property
    def names(self) -> list[str]:
        """Paths relative to the folder, in image order."""
        return [p.relative_to(self.root).as_posix() for p in self.files]

    def _open(self, index: int) -> Image.Image:
        """Image ``index`` decoded to mode ``L``, ``RGB`` or ``F`` (16-bit data, values in [0, 1])."""
        image = decode_image(self.files[index], self.mode)
        if self.size is not None:
            return _resize_centre_crop(image, self.size)
        if self._shape is None:
            self._shape = image.size
        elif image.size != self._shape:
            raise InvalidInputError(
                f"{self.files[index]}: size {image.size[1]}x{image.size[0]} (H x W) differs from "
                f"the first image's {self._shape[1]}x{self._shape[0]}; pass --image-size to "
                "resize all images"
            )
        return image

    def __getitem__(self, index: int) -> np.ndarray:
        """Image ``index`` as float32 ``(C, H, W)`` in ``[0, 1]``."""
        return _to_chw(self._open(int(index)), self.mode)

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start:stop`` as a float32 tensor ``(B, C, H, W)`` in ``[0, 1]``."""
        return torch.from_numpy(np.stack([self[i] for i in range(start, stop)]))

    def thumbnails(self, side: int = 32) -> np.ndarray:
        """Every image resized to ``side x side``, flattened: float32 ``(N, C * side * side)``."""
        out = []
        for i in track(range(len(self)), description="thumbnails"):
            small = self._open(i).resize((side, side), Image.Resampling.BILINEAR)
            out.append(_to_chw(small, self.mode).reshape(-1))
        return np.stack(out)


def decode_image(path: Path, mode: str) -> Image.Image:
    """Read ``path`` as mode ``mode`` (``L`` or ``RGB``), or ``F`` in [0, 1] for 16-bit grey data.

    Raises:
        InvalidInputError: an image over :data:`MAX_PIXELS` pixels or with no pixels.
        DataError: a file Pillow cannot read.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                _check_size(path, handle.size)
                return _convert(_upright(handle), mode, path)
    except InvalidInputError:  # a ValueError too: ours, already one line naming the file
        raise
    except Image.DecompressionBombError:
        raise InvalidInputError(
            f"{path}: too many pixels (limit {MAX_PIXELS}); downscale the image first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # ValueError: a colour space Pillow cannot convert (a CIELAB TIFF to RGB or L)
        raise DataError(f"{path}: cannot read the image ({exc}); remove or replace it") from None


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (camera photos are stored sideways with
    the tag; viewers and torchvision-style loaders show them upright). An unreadable tag leaves
    the image as stored, as viewers do."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block (Pillow raises several kinds); the pixels are fine
        return image


def _check_size(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidInputError(f"{path}: the image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InvalidInputError(
            f"{path}: {width}x{height} is too many pixels (limit {MAX_PIXELS}); "
            "downscale the image first"
        )


def _convert(image: Image.Image, mode: str, path: Path) -> Image.Image:
    """``image`` in ``mode``; 16-bit grey becomes ``F`` scaled by 65535, palettes are resolved."""
    if image.mode in _SIXTEEN_BIT:
        _refuse_wide_integers(image, path)
        values = np.asarray(image).astype(np.float32)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InvalidInputError(
                f"{path}: integer pixels outside 0..65535; save it as an 8- or 16-bit image"
            )
        return Image.fromarray(values / 65535.0, mode="F")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if values.size and not (
            np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        ):
            raise InvalidInputError(f"{path}: floating-point pixels outside [0, 1]")
        return image.copy()
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # resolve the palette (and its transparency) first
    return image.convert(mode)


def _refuse_wide_integers(image: Image.Image, path: Path) -> None:
    """Pillow's mode ``I`` holds 32-bit integers: 16-bit data from PNG and PGM/PPM (Pillow scales
    a PGM's maxval to 65535) or a 16-bit TIFF, but a 32-bit TIFF's pixels have no known full
    scale (0..255 digits saved as int32 would be divided by 65535: nearly black images)."""
    if image.mode != "I":
        return
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if bits is None and image.format in ("PNG", "PPM"):
        return
    if bits is not None and tuple(bits)[:1] == (16,):
        return
    depth = f"{next(iter(bits))}-bit" if bits else "32-bit"
    raise InvalidInputError(
        f"{path}: {depth} integer pixels, whose full scale is not known; save it as an 8- or "
        "16-bit image, or as floating-point pixels in [0, 1]"
    )


def _to_chw(image: Image.Image, mode: str) -> np.ndarray:
    """A decoded image as float32 ``(C, H, W)`` in [0, 1] (``C`` = 3 for RGB, 1 for L)."""
    array = np.asarray(image, dtype=np.float32)
    if image.mode != "F":
        array = array / 255.0
    if array.ndim == 2:
        return np.repeat(array[None], 3 if mode == "RGB" else 1, axis=0)
    return np.ascontiguousarray(np.moveaxis(array, -1, 0))


def folder_labels(
    names: list[str], root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, list[str]] | None:
    """Labels from an ImageFolder layout (every name ``class/file``), else None.

    Integer class folders (``0/``, ``7/``) keep their value as the label; other names are numbered
    in sorted order, as torchvision's ImageFolder does. Returns ``(labels (N,) int64, classes)``.

    Raises:
        InvalidInputError: a negative integer folder, integer and named folders mixed (``3/``,
            ``8/``, ``unsure/``), which would renumber every class silently, or two folders of one
            class index (``3/`` and ``03/``).
    """
    parts = [name.split("/") for name in names]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    raw = [p[0] for p in parts]
    problem = _label_kind_problem(raw)
    if problem is not None:
        index, kind = problem
        folder = raw[index]
        why = {
            "negative": "is a negative number; class indices must be >= 0",
            "number": "is a number but not a class index (0, 1, 2, ...)",
            "large": f"is a class index above {MAX_CLASS_INDEX:,}",
            "mixed": f"is not a class index while other class folders are ({_integer_folders(raw)})",
        }[kind]
        raise InvalidInputError(f"class folder {folder!r} {why}: rename or remove {folder}/")
    twins = _same_class_folders(raw)
    if twins is not None:
        first, second = twins
        raise InvalidInputError(
            f"class folders {first}/ and {second}/ are both class {int(first)}: "
            "merge them into one folder"
        )
    if root is not None and not all(re.fullmatch(r"\d+", v) for v in raw):
        _refuse_empty_class_folders(Path(root), set(raw))
    return encode_labels(raw)


def _refuse_empty_class_folders(root: Path, found: set[str]) -> None:
    """Named classes are numbered in sorted order: a class folder without images (``dog/``
    between ``cat/`` and ``zebra/``) would renumber every class after it. Refused, as torchvision's
    ImageFolder does."""
    empty = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name) and p.name not in found
    )
    if empty:
        raise InvalidInputError(
            f"class folder {empty[0]}/ in {root} holds no images: the classes after it would be "
            "numbered one lower than the model's; add its images or remove the folder"
        )


def _same_class_folders(raw: list[str]) -> tuple[str, str] | None:
    """Two integer class folders spelled differently with one value (``3/`` and ``03/``), else
    None: their images would merge into one class without a word."""
    seen: dict[int, str] = {}
    for name in sorted(set(raw)):
        if re.fullmatch(r"\d+", name):
            other = seen.setdefault(int(name), name)
            if other != name:
                return other, name
    return None


def _integer_folders(raw: list[str]) -> str:
    """The first few integer class folders among ``raw``, e.g. ``3/, 8/``."""
    ints = sorted({int(v) for v in raw if re.fullmatch(r"\d+", v)})
    return ", ".join(f"{v}/" for v in ints[:3]) + (", ..." if len(ints) > 3 else "")


def unlabelled_reason(names: list[str], folder: str) -> str:
    """Why the images ``names`` (paths relative to ``folder``) take no labels from their folders,
    and what to do: one line for an error message."""
    fix = f"class subfolders must hold the images directly ({folder}/<class>/<image>)"
    depths = [name.count("/") for name in names]
    if not any(depths):
        return f"the images lie directly in {folder}: give --labels FILE, or {fix}"
    odd = next(i for i, depth in enumerate(depths) if depth != 1)
    where = (
        "lies outside any class subfolder"
        if depths[odd] == 0
        else f"lies {depths[odd]} folders deep"
    )
    return f"{names[odd]!r} {where}, but {fix}; move the images or give --labels FILE"


def _resize_centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, then crop the central ``size x size`` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def read_labels(path: str | os.PathLike[str], names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Labels of the images ``names`` (relative paths) from a labels file.

    Returns ``(labels (N,) int64, class names)``; class ``i`` is ``class_names[i]``.
    Every image needs a label (matched by relative path, else by unique file name).
    """
    entries = _parse_label_lines(Path(path))
    names = [unicodedata.normalize("NFC", name) for name in names]  # macOS writes NFD names
    _drop_header(entries, names)
    by_base: dict[str, str | None] = {}
    for key, label in entries.items():
        base = key.rsplit("/", 1)[-1]
        by_base[base] = None if base in by_base and by_base[base] != label else label
    images_by_base: dict[str, list[str]] = {}
    for name in names:
        images_by_base.setdefault(name.rsplit("/", 1)[-1], []).append(name)
    raw: list[str] = []
    for name in names:
        value: str | None = entries.get(name)
        base = name.rsplit("/", 1)[-1]
        unique = len(images_by_base[base]) == 1  # a file name stands for one image only
        if value is None and base in entries and not unique:
            first, second = images_by_base[base][:2]
            raise InvalidInputError(
                f"{path}: '{base}' names both {first!r} and {second!r}; give each image's path "
                f"relative to the folder ('{first} <label>')"
            )
        if value is None and unique:
            value = by_base.get(base)
        if value is None:
            raise InvalidInputError(
                f"{path}: no label for image {name!r}; add a line '{name} <label>'"
            )
        raw.append(value)
    _check_label_kinds(path, names, raw)
    _refuse_names_mixed_with_indices(path, entries, raw)
    # named classes are numbered over every label the file gives, images here or not: a class with
    # no image in the folder must not renumber the classes after it
    return encode_labels(raw, entries.values())


def _drop_header(entries: dict[str, str], names: list[str]) -> None:
    """Remove a CSV header (``image,class``, ``image_file,species``) from the parsed ``entries``:
    a first line that names no image here, does not look like a file (no suffix, no folder) and
    whose label no other line has. Kept, its label would be a class and, sorted among the class
    names, renumber the classes after it. An absent image's line (``old/photo.heic ant``) stays:
    named classes are numbered over every label of the file."""
    if len(entries) < 2:
        return
    name, label = next(iter(entries.items()))
    bases = {n.rsplit("/", 1)[-1] for n in names}
    looks_like_a_file = bool(Path(name).suffix) or "/" in name
    if name in names or name in bases or looks_like_a_file:
        return
    if list(entries.values()).count(label) == 1:
        del entries[name]


def _refuse_names_mixed_with_indices(
    path: str | os.PathLike[str], entries: dict[str, str], raw: list[str]
) -> None:
    """Named classes are numbered over every label of the file, images here or not: an entry of
    an absent image with a class index (``stale.png 7``) among class names would become class
    '7' and shift every named class. Refused, as a mix among the present images is."""
    if all(re.fullmatch(r"\d+", v) for v in raw):
        return  # class indices keep their values: other entries change nothing
    for name, label in entries.items():
        if _NUMBER.fullmatch(label):  # signed too: -1, +3, 7.0
            raise InvalidInputError(
                f"{path}: label {label!r} of {name!r} is a number while the images here have class "
                "names; use class indices or class names throughout"
            )


def _check_label_kinds(path: str | os.PathLike[str], names: list[str], raw: list[str]) -> None:
    """Refuse the labels of a labels file that :func:`encode_labels` would misread."""
    problem = _label_kind_problem(raw)
    if problem is None:
        return
    index, kind = problem
    value, name = raw[index], names[index]
    why = {
        "negative": "is negative; class indices must be >= 0",
        "number": "is a number but not a class index (0, 1, 2, ...); write it as an integer",
        "large": f"is above {MAX_CLASS_INDEX:,}, more classes than any model here has",
        "mixed": "is not a class index >= 0 while others are; use class indices or class names "
        "throughout",
    }[kind]
    raise InvalidInputError(f"{path}: label {value!r} of image {name!r} {why}")


MAX_CLASS_INDEX = 1_000_000  # larger integer labels are typos (and a class list that long, memory)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _label_kind_problem(raw: list[str]) -> tuple[int, str] | None:
    """``(index, kind)`` of the first label :func:`encode_labels` would misread, else None:
    ``negative`` (``-1``), ``number`` (a number that is not a class index, ``7.0``, which would be
    read as a name and renumbered), ``large`` (above :data:`MAX_CLASS_INDEX`), or ``mixed`` (a name
    among class indices, which would renumber every label silently: a typo or an ``unsure/``
    folder makes all of them names). The one rule for labels files and class folders."""
    for index, value in enumerate(raw):
        if re.fullmatch(r"-\d+", value):
            return index, "negative"
        if _NUMBER.fullmatch(value) and not re.fullmatch(r"\d+", value):
            return index, "number"
        if re.fullmatch(r"\d+", value) and int(value) > MAX_CLASS_INDEX:
            return index, "large"
    ints = [bool(re.fullmatch(r"\d+", v)) for v in raw]
    if any(ints) and not all(ints):
        return ints.index(False), "mixed"
    return None


def _parse_label_lines(path: Path) -> dict[str, str]:
    """``{image name: label}`` from the lines ``<name> <label>`` of a labels file: the label is
    the last field, the name everything before it (quotes around it dropped), so names may hold
    spaces, commas and ``#``; a ``#`` at the start of a line or after a space starts a comment; an
    image given two different labels is refused."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM from Windows editors
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: labels file not found") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as exc:
        raise InvalidInputError(f"{path}: cannot read the labels file ({exc})") from None
    entries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*", "", line).strip()  # comments: '#' at the start or after a space
        if not line:
            continue
        found = re.fullmatch(r"(.+?)[,\t ]+([^,\t ]+)", line)
        if found is None:
            raise InvalidInputError(
                f"{path}:{number}: expected '<image> <label>' (the label last, after a space, tab "
                f"or comma), got {line!r}"
            )
        name, label = (_unquoted(found.group(k).strip().strip(",").strip()) for k in (1, 2))
        name = unicodedata.normalize("NFC", name.removeprefix("./"))
        if name in entries and entries[name] != label:
            raise InvalidInputError(
                f"{path}:{number}: image {name!r} has label {label!r} here and "
                f"{entries[name]!r} on line {lines[name]}; keep one"
            )
        entries[name], lines[name] = label, number
    if not entries:
        raise InvalidInputError(f"{path}: the labels file has no entries")
    return entries


def _unquoted(text: str) -> str:
    """``text`` without one pair of matching quotes around it (CSV writers quote fields)."""
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def encode_labels(
    raw: list[str], names: Iterable[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Class indices int64 ``(N,)`` and class names for label strings ``raw``.

    All-integer labels keep their values (classes ``"0"`` .. ``str(max)``); otherwise the sorted
    distinct names are numbered from 0: those of ``names`` (every class the data declares, with or
    without images here) when given, else of ``raw``.
    """
    if all(re.fullmatch(r"\d+", v) for v in raw):
        ints = np.array([int(v) for v in raw], dtype=np.int64)
        return ints, [str(i) for i in range(int(ints.max()) + 1)]
    classes = sorted(set(raw) | set(names or ()))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in raw], dtype=np.int64), classes
