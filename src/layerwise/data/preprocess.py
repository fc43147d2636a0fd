"""The preprocessing a model was trained with, saved with its run and applied to new inputs.

A recipe's data goes through two stages before the model sees it: the dataset's loader (MNIST
scales pixels to [0, 1] and standardises them; a CSV table is read as it is) and the data fixes of
`layerwise.data.clean`, fit on the training split (fill missing values, drop constant columns,
standardise). New inputs must go through both, or the model answers nonsense with confidence
(a wine model given raw rows said `class_0 1.000` for every row). `Preprocess` records both stages
as plain numbers, is saved as `preprocess.json` in the run folder, and turns raw rows (as in the
training file) or image files (as people make them) into model inputs, with a note or a warning
naming the numbers when the inputs do not look like the training data:

    rows (raw feature values)  -> impute -> drop constant columns -> standardise -> model
    image file -> mode, polarity, size (MNIST-like centring when the training images have a plain
                  background) -> pixels in [0, 1] -> the loader's scaling -> standardise -> model

It depends on NumPy, Pillow and torch only, so export and serving can use it as it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.errors import DataError, ShapeError

PREPROCESS_FILE = "preprocess.json"
FORMAT = 1
# A value is "far outside" the training range when it lies beyond it by more than this many
# training ranges (a raw wine proline of 1,000 given to a model that saw standardised values
# from -2 to 3 is 200 ranges out; a new but plausible value is a fraction of one).
FAR_OUTSIDE = 1.0
# Images at most this fraction of the training size (per side) are too small to be trusted.
TINY = 0.5
# A pixel belongs to the drawing when it differs from the background by more than this.
INK = 0.1


@dataclass
class ImageSpec:
    """What the training images looked like: shape, pixel scale and (if plain) background.

    `loader_mean`/`loader_std`: the loader standardised pixels in [0, 1] with these (MNIST:
    0.1307, 0.3081), else None; `scale`: otherwise the loader's pixels are `p * scale` with p in
    [0, 1] (1 for digits, 255 for uint8-valued arrays). `background`: the training images' border
    value in [0, 1] when it is plain (MNIST: 0.0, a black background), else None; then
    `content`: the median size of the drawn part (its bounding box's longer side) over the image
    side (MNIST: 20 of 28 pixels), and `centre` the median centre of mass of the drawn part.
    """

    channels: int
    height: int
    width: int
    flat: bool = False  # the model takes the pixels as one row (an MLP on flattened MNIST)
    loader_mean: float | None = None
    loader_std: float | None = None
    scale: float = 1.0
    background: float | None = None
    content: float | None = None
    centre: list[float] | None = None  # median centre of mass (row, column) of the drawings


@dataclass
class Preprocess:
    """The fitted preprocessing of one run. Build it with `fit_preprocess`, keep it with `save`,
    read it with `load_preprocess`, apply it with `rows` (arrays) and `image` (image files)."""

    input_shape: list[int]  # what the model takes, per sample
    raw_shape: list[int]  # what the loader gives, per sample (before columns were dropped)
    feature_names: list[str] | None = None
    impute: list[float] | None = None  # fill per raw position (train mean/median), flattened
    keep: list[int] | None = None  # the raw columns kept (data.drop_constant)
    mean: list[float] | None = None  # data.standardize, per feature or per channel
    std: list[float] | None = None
    per_channel: bool = False
    low: list[float] = field(default_factory=list)  # training range per raw position
    high: list[float] = field(default_factory=list)
    image: ImageSpec | None = None
    format: int = FORMAT

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PREPROCESS_FILE
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        image = data.get("image")
        return cls(**{**data, "image": ImageSpec(**image) if image else None})

    # ------------------------------------------------------------------ arrays
    def rows(self, x: Any, source: str = "inputs") -> tuple[Tensor, list[str]]:
        """Raw rows (one sample or a batch, flattened or not) -> model inputs, and the notes.

        For tables, raw means as in the training file, before any fix. For image models the
        rows are pixels, 0-255 or 0-1 (each a file's worth of pixels, flattened or not).
        """
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        notes: list[str] = []
        x = self._shape_rows(x, source)
        if self.image is not None:
            low, high = float(x.min()), float(x.max())
            if low < -0.01:  # not pixels: preprocessed already
                return self._to_model(x), [
                    f"warning: {source} holds values from {low:.3g} to {high:.3g}, not pixels "
                    "(0-255 or 0-1); they are taken as model inputs, preprocessed already"
                ]
            x, notes = self._pixel_rows(x, high, source)
        notes += self._range_notes(x, source)
        return self._to_model(self._fixes(x, source)), notes

    def _shape_rows(self, x: Tensor, source: str) -> Tensor:
        raw = tuple(self.raw_shape)
        size = math.prod(raw)
        if tuple(x.shape) == raw or (x.dim() == 1 and x.numel() == size):
            return x.reshape(1, *raw)
        if x.dim() >= 2 and math.prod(x.shape[1:]) == size:
            return x.reshape(len(x), *raw)
        width = size if len(raw) == 1 else f"{size} ({' x '.join(map(str, raw))})"
        given = x.shape[-1] if x.dim() == 2 else tuple(x.shape)
        named = f" ({', '.join(self.feature_names[:5])}, …)" if self.feature_names else ""
        raise ShapeError(
            f"{source} has rows of {given} values, but the model was trained on {width} "
            f"features{named}",
            hint="give the rows as in the training data, before any preprocessing: the run "
            "applies its own (standardisation, imputation, dropped columns)",
        )

    def _pixel_rows(self, x: Tensor, high: float, source: str) -> tuple[Tensor, list[str]]:
        """Pixels to the loader's values: 0-255 and 0-1 are told apart by the largest value."""
        notes = []
        if high > 1.0 + 1e-6:
            notes.append(f"note: {source} read as pixels 0-255 (largest value {high:.4g})")
            if high > 255.0 + 1e-3:
                notes.append(
                    f"warning: {source} has values up to {high:.4g}, above the 255 of a pixel"
                )
            x = x / 255.0
        return self._loader_pixels(x), notes

    def _loader_pixels(self, pixels: Tensor) -> Tensor:
        image = self.image
        if image.loader_mean is not None:
            return (pixels - image.loader_mean) / image.loader_std
        return pixels * image.scale

    def _range_notes(self, x: Tensor, source: str) -> list[str]:
        if not self.low or self.image is not None:
            return []
        low = torch.tensor(self.low).reshape(x.shape[1:])
        high = torch.tensor(self.high).reshape(x.shape[1:])
        span = (high - low).clamp(min=1e-12)
        distance = torch.maximum(low - x, x - high).clamp(min=0) / span
        far = (distance > FAR_OUTSIDE) & torch.isfinite(x)
        if not bool(far.any()):
            return []
        columns = far.reshape(len(x), -1).any(0).nonzero().flatten().tolist()
        worst = int(distance.reshape(len(x), -1).nan_to_num(0).amax(0).argmax())
        row = int(distance.reshape(len(x), -1)[:, worst].nan_to_num(0).argmax())
        name = self.feature_names[worst] if self.feature_names else f"feature {worst}"
        value = float(x.reshape(len(x), -1)[row, worst])
        rows = int(far.reshape(len(x), -1).any(1).sum())
        return [
            f"warning: {rows} of {len(x)} rows of {source} have values far outside the training "
            f"range in {len(columns)} of {x[0].numel()} features (e.g. {name} = {value:.4g}, "
            f"trained on {float(self.low[worst]):.4g} to {float(self.high[worst]):.4g}); give "
            "raw values as in the training data"
            + (" (the run standardises them itself)" if self.mean is not None else "")
        ]

    def _fixes(self, x: Tensor, source: str) -> Tensor:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            if self.impute is None:
                raise DataError(
                    f"{source} holds {int(bad.sum())} missing (NaN) or infinite values, and "
                    "the model was trained without data.impute",
                    hint="fill them, or train with data.impute: mean (or median)",
                )
            fill = torch.tensor(self.impute, dtype=x.dtype).reshape(x.shape[1:])
            x = torch.where(bad, fill, x)
        if self.keep is not None:
            x = x.index_select(1, torch.tensor(self.keep, dtype=torch.long))
        if self.mean is not None:
            shape = (1, -1, *([1] * (x.dim() - 2))) if self.per_channel else (1, *x.shape[1:])
            mean = torch.tensor(self.mean, dtype=x.dtype).reshape(shape)
            std = torch.tensor(self.std, dtype=x.dtype).reshape(shape)
            x = (x - mean) / std
        return x

    def _to_model(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), *self.input_shape)

    # ------------------------------------------------------------------ images
    def image_file(self, path: str | Path) -> tuple[Tensor, list[str]]:
        """An image file -> one model input (batch of 1), and the notes on how it was read."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        if self.image is None:
            raise ShapeError(
                f"image '{path.name}' given, but the model was trained on rows of "
                f"{math.prod(self.raw_shape)} features, not images",
                hint="give .npy or .csv rows as in the training data",
            )
        try:
            with Image.open(path) as opened:
                opened.load()
                picture = opened.copy()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            # Pillow's format plugins report a broken header as ValueError or SyntaxError
            raise DataError(f"cannot read image '{path}': {exc}", hint="is it complete?") from exc
        pixels, notes = self.image_pixels(picture, path.name)
        return self.pixels_to_model(pixels, path.name), notes

    def pixels_to_model(self, pixels: Tensor, source: str = "image") -> Tensor:
        """Pixels in [0, 1] shaped (N, C, H, W) -> model inputs (the loader's scaling and the
        fitted fixes)."""
        x = self._loader_pixels(pixels).reshape(len(pixels), *self.raw_shape)
        return self._to_model(self._fixes(x, source))

    def image_pixels(self, picture: Any, name: str) -> tuple[Tensor, list[str]]:
        """A PIL image -> pixels in [0, 1] shaped (1, C, H, W) like the training images."""
        from PIL import Image

        spec = self.image
        notes: list[str] = []
        mode = "L" if spec.channels == 1 else "RGB"
        if picture.mode in ("RGBA", "LA") or "transparency" in picture.info:
            backdrop = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(backdrop, picture.convert("RGBA"))
            notes.append(f"note: {name}: transparent parts read as white")
        if picture.mode != mode:
            if picture.mode not in ("RGBA", "P", "1") or mode != "RGB":
                kind = {"L": "grayscale", "RGB": "colour"}
                notes.append(
                    f"note: {name}: {picture.mode} image converted to {kind[mode]} ({mode}), as "
                    "the training images"
                )
            picture = picture.convert(mode)
        width, height = picture.size
        if width <= spec.width * TINY or height <= spec.height * TINY:
            notes.append(
                f"warning: {name} is {width}x{height} pixels, the model was trained on "
                f"{spec.width}x{spec.height}: upscaled "
                f"{max(spec.width / width, spec.height / height):.1f}x, "
                "too little detail for a trustworthy prediction"
            )
        array = np.asarray(picture, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        if spec.background is not None:
            array, more = _like_training(array, spec, name)
        else:
            array, more = _cover(array, spec, name)
        notes += more
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return tensor.unsqueeze(0), notes


# ------------------------------------------------------------------------------ fitting
def fit_preprocess(
    raw: DatasetBundle,
    report: dict[str, dict[str, Any]],
    cleaned: DatasetBundle,
    feature_names: list[str] | None = None,
) -> Preprocess:
    """The preprocessing of `cleaned`, made from `raw` (the loader's bundle, before the fixes)
    by `clean_bundle`, whose `report` holds the fitted numbers.

    Every number is fit on the training split, as the fixes were.
    """
    from layerwise.data.clean import _column_statistic

    x = raw.train[0].float()
    flat = x.reshape(len(x), -1)
    finite = torch.isfinite(flat)
    low = torch.where(finite, flat, torch.inf).amin(0)
    high = torch.where(finite, flat, -torch.inf).amax(0)
    fill = None
    if "impute" in report:
        fill = _column_statistic(flat, ~finite, report["impute"]["strategy"]).tolist()
    keep = None
    if report.get("drop_constant", {}).get("indices"):
        dropped = set(report["drop_constant"]["indices"])
        keep = [i for i in range(x.shape[1]) if i not in dropped]
    standard = report.get("standardize")
    return Preprocess(
        input_shape=list(cleaned.input_shape),
        raw_shape=list(x.shape[1:]),
        feature_names=feature_names if feature_names and len(feature_names) == x.shape[1] else None,
        impute=fill,
        keep=keep,
        mean=standard["mean"] if standard else None,
        std=standard["std"] if standard else None,
        per_channel=bool(standard and standard["dims"] == "channel"),
        low=low.nan_to_num(0.0, posinf=0.0, neginf=0.0).tolist(),
        high=high.nan_to_num(0.0, posinf=0.0, neginf=0.0).tolist(),
        image=_image_spec(raw, x),
    )


def load_preprocess(folder: str | Path) -> Preprocess | None:
    """The run folder's `preprocess.json`, or None for a run made before it existed."""
    path = Path(folder) / PREPROCESS_FILE
    if not path.exists():
        return None
    try:
        return Preprocess.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read '{path}': {exc}",
            hint="delete it: predict then rebuilds the preprocessing from the recipe's data",
        ) from exc


def _image_spec(raw: DatasetBundle, x: Tensor) -> ImageSpec | None:
    """Images: inputs of (C, H, W), or flat rows of a square image the loader standardised."""
    if x.dim() == 4:
        channels, height, width = x.shape[1:]
        flat = False
    elif x.dim() == 2 and raw.pixel_stats is not None and math.isqrt(x.shape[1]) ** 2 == x.shape[1]:
        channels, height, width, flat = 1, math.isqrt(x.shape[1]), math.isqrt(x.shape[1]), True
    else:
        return None
    spec = ImageSpec(int(channels), int(height), int(width), flat)
    if raw.pixel_stats is not None:
        spec.loader_mean, spec.loader_std = map(float, raw.pixel_stats)
        pixels = x * spec.loader_std + spec.loader_mean
    else:
        spec.scale = 255.0 if float(x.max()) > 1.5 else 1.0
        pixels = x / spec.scale
    sample = pixels[:: max(1, len(pixels) // 512)].reshape(-1, spec.height, spec.width, channels)
    spec.background, spec.content, spec.centre = _background(sample.numpy())
    return spec


def _background(images: np.ndarray) -> tuple[float | None, float | None, list[float] | None]:
    """The plain border value of training images (N, H, W, C) in [0, 1], the median size of
    their drawn part over the image side and its median centre of mass (row, column); all None
    when borders vary (photos)."""
    border = np.concatenate(
        [
            images[:, 0].ravel(),
            images[:, -1].ravel(),
            images[:, :, 0].ravel(),
            images[:, :, -1].ravel(),
        ]
    )
    value = float(np.median(border))
    if np.mean(np.abs(border - value) < 0.15) < 0.9:
        return None, None, None
    sizes, centres = [], []
    for image in images:
        ink = np.abs(image - value).sum(axis=2)
        rows, cols = np.nonzero(ink > INK)
        if len(rows):
            sizes.append(max(np.ptp(rows) + 1, np.ptp(cols) + 1) / max(image.shape[:2]))
            centres.append(_centre_of_mass(ink))
    if not sizes:
        return round(value, 3), None, None
    centre = [round(float(c), 2) for c in np.median(np.array(centres), axis=0)]
    return round(value, 3), round(float(np.median(sizes)), 3), centre


def _centre_of_mass(weight: np.ndarray) -> tuple[float, float]:
    total = weight.sum() or 1.0
    rows = (weight.sum(axis=1) * np.arange(weight.shape[0])).sum() / total
    cols = (weight.sum(axis=0) * np.arange(weight.shape[1])).sum() / total
    return float(rows), float(cols)


def _like_training(array: np.ndarray, spec: ImageSpec, name: str) -> tuple[np.ndarray, list[str]]:
    """Drawn-on-a-plain-background images made like the training ones (MNIST's recipe): the
    polarity of the background, the drawn part cropped, scaled (keeping its aspect) to the
    training size and centred by its centre of mass."""
    from PIL import Image

    notes = []
    h, w = array.shape[:2]
    border = np.concatenate(
        [array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel()]
    )
    seen = float(np.median(border))
    if abs(seen - spec.background) > 0.5:
        array = 1.0 - array
        notes.append(
            f"note: {name} looks {'dark-on-light' if seen > 0.5 else 'light-on-dark'} (border "
            f"{seen:.2f}) but the training images are "
            f"{'light-on-dark' if spec.background < 0.5 else 'dark-on-light'} (border "
            f"{spec.background:.2f}): inverted"
        )
    ink = np.abs(array - spec.background).max(axis=2)
    rows, cols = np.nonzero(ink > INK)
    if not len(rows):
        notes.append(f"warning: {name} looks blank: nothing differs from its background")
        return _resize(array, spec.width, spec.height), notes
    crop = array[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    target = (spec.content or 1.0) * max(spec.height, spec.width)
    scale = target / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    if (h, w) != (spec.height, spec.width) or abs(scale - 1.0) > 0.15:
        notes.append(
            f"note: {name} ({w}x{h}): its drawing ({crop.shape[1]}x{crop.shape[0]}) scaled "
            f"to {size[0]}x{size[1]} and centred in {spec.width}x{spec.height}, as the "
            "training images"
        )
    else:
        size = (crop.shape[1], crop.shape[0])
    small = _resize(crop, *size, Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS)
    canvas = np.full((spec.height, spec.width, array.shape[2]), spec.background, dtype=np.float32)
    cy, cx = _centre_of_mass(np.abs(small - spec.background).sum(axis=2))
    want_y, want_x = spec.centre or ((spec.height - 1) / 2, (spec.width - 1) / 2)
    top, left = round(want_y - cy), round(want_x - cx)
    top = min(max(top, 0), spec.height - small.shape[0]) if small.shape[0] <= spec.height else 0
    left = min(max(left, 0), spec.width - small.shape[1]) if small.shape[1] <= spec.width else 0
    region = small[: spec.height, : spec.width]
    canvas[top : top + region.shape[0], left : left + region.shape[1]] = region
    return canvas.clip(0.0, 1.0), notes


def _cover(array: np.ndarray, spec: ImageSpec, name: str) -> tuple[np.ndarray, list[str]]:
    """Photos: scaled (keeping the aspect) to cover the training size, the centre kept."""
    h, w = array.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return array, []
    scale = max(spec.height / h, spec.width / w)
    size = (max(spec.width, round(w * scale)), max(spec.height, round(h * scale)))
    resized = _resize(array, *size)
    top, left = (size[1] - spec.height) // 2, (size[0] - spec.width) // 2
    notes = [f"note: {name} ({w}x{h}) resized to {size[0]}x{size[1]} and its centre cropped"]
    return resized[top : top + spec.height, left : left + spec.width], notes


def _resize(array: np.ndarray, width: int, height: int, method: Any = None) -> np.ndarray:
    from PIL import Image

    if array.shape[:2] == (height, width):
        return array
    method = method or Image.Resampling.BILINEAR
    channels = [
        np.asarray(Image.fromarray(array[:, :, c]).resize((width, height), method))
        for c in range(array.shape[2])
    ]
    return np.stack(channels, axis=2).astype(np.float32)
