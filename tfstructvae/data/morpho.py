"""Stroke measures of digit images: slant and thickness, as Morpho-MNIST defines them
(Castro et al. 2019, "Morpho-MNIST: quantitative assessment and diagnostics for representation
learning").

Every image is upsampled `scale` times (cubic spline, so that thin strokes keep sub-pixel
widths) and thresholded at half its intensity range. On that binary stroke:

    slant      arctan(-mu11 / mu02), from the stroke's second-order central moments with x to
               the right and y downwards: the angle of the horizontal shear that makes the
               stroke upright. 0 for an upright digit, > 0 when it leans right ("/"). Radians.
    thickness  2 * the mean distance to the background along the skeleton (the stroke thinned to one pixel),
               divided by `scale`: the mean stroke width in pixels of the original image.

`measure_batch` measures a whole dataset (about 3 ms an image) and `cached_measures` keeps the
result in a `.npz` beside the data, so a dataset is measured once.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from scipy import ndimage

MEASURES = ("slant", "thickness")


def _binary_stroke(image: np.ndarray, threshold: float, scale: int) -> np.ndarray:
    image = np.asarray(image, np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"measure a single greyscale image (H, W) or (H, W, 1), got shape {image.shape}")
    if scale > 1:
        image = ndimage.zoom(image, scale, order=3)
    low, high = image.min(), image.max()
    if high <= low:
        raise ValueError("cannot measure a blank image (every pixel has the same value)")
    return image >= low + threshold * (high - low)


def slant_of(stroke: np.ndarray) -> float:
    """arctan(-mu11 / mu02) of a binary stroke (radians; > 0 leans right)."""
    y, x = np.nonzero(stroke)
    dx, dy = x - x.mean(), y - y.mean()
    mu11, mu02 = np.mean(dx * dy), np.mean(dy * dy)
    return float(np.arctan(-mu11 / mu02)) if mu02 > 0 else 0.0


def thickness_of(stroke: np.ndarray, scale: int) -> float:
    """2 * mean distance to the background along the skeleton, in original pixels."""
    # scikit-image's thinning (Zhang-Suen) is ~30x faster than its medial_axis on these images
    # and gives the same widths within a few hundredths of a pixel on drawn strokes.
    try:
        from skimage.morphology import skeletonize
    except ImportError as e:
        raise ImportError("measuring stroke thickness needs scikit-image: pip install 'tfstructvae[morpho]'") from e

    skeleton = skeletonize(stroke)
    distance = ndimage.distance_transform_edt(stroke)
    return float(2.0 * distance[skeleton].mean() / scale) if skeleton.any() else 0.0


def measure(image: np.ndarray, threshold: float = 0.5, scale: int = 4) -> dict[str, float]:
    """{'slant': radians, 'thickness': pixels} of one greyscale digit image."""
    stroke = _binary_stroke(image, threshold, scale)
    return {"slant": slant_of(stroke), "thickness": thickness_of(stroke, scale)}


def measure_batch(images: np.ndarray, threshold: float = 0.5, scale: int = 4,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """The measures of every image, as float32 arrays of shape (N,)."""
    out = {name: np.empty(len(images), np.float32) for name in MEASURES}
    start = time.perf_counter()
    for i, image in enumerate(images):
        for name, value in measure(image, threshold, scale).items():
            out[name][i] = value
        if progress and ((i + 1) % 2000 == 0 or i + 1 == len(images)):
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"\rmeasuring slant and thickness: {i + 1}/{len(images)} images "
                  f"({rate:.0f}/s, {(len(images) - i - 1) / rate:.0f} s left)", end="", file=sys.stderr, flush=True)
    if progress and len(images):
        print(file=sys.stderr)
    return out


def cached_measures(images: np.ndarray, path: str, **kwargs) -> dict[str, np.ndarray]:
    """`measure_batch(images)`, read from `path` (.npz) when it holds the measures of as many images."""
    if os.path.exists(path):
        with np.load(path) as f:
            if all(name in f and len(f[name]) == len(images) for name in MEASURES):
                return {name: f[name] for name in MEASURES}
    values = measure_batch(images, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **values)
    os.replace(tmp, path)
    return values


# The dataset `mnist_morpho`: MNIST with slant and thickness as node labels.
SUPERVISED_SHARE = 0.01   # training images whose measures are given
MORPHO_SEED = 0           # which ones: fixed, so every run and label draw sees the same measured set
CACHE_ENV_VAR = "TFSTRUCTVAE_CACHE_DIR"
# How a measure becomes a node label before standardisation.
LABEL_TRANSFORM = {"slant": lambda v: v, "thickness": np.log}


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "tfstructvae")


def standardised_measures(mnist, share: float = SUPERVISED_SHARE, seed: int = MORPHO_SEED):
    """({measure: (N_train,) every training image's label}, {measure: (N_test,)}, given (N_train,) bool):
    each measure transformed (LABEL_TRANSFORM) and standardised by the mean and standard deviation
    over the `given` training images, a fixed `share` of them drawn with `seed`."""
    import hashlib

    measured = {}
    for part, x in (("train", mnist.x_train), ("test", mnist.x_test)):
        digest = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
        measured[part] = cached_measures(x.astype(np.float32) / 255.0,
                                         os.path.join(cache_dir(), f"morpho-{digest}.npz"))
    n = len(mnist.x_train)
    given = np.zeros(n, bool)
    given[np.random.default_rng(seed).choice(n, max(1, round(share * n)), replace=False)] = True
    train, test = {}, {}
    for name in MEASURES:
        values = LABEL_TRANSFORM[name](measured["train"][name])
        mean, std = values[given].mean(), values[given].std()
        train[name] = ((values - mean) / std).astype(np.float32)
        test[name] = ((LABEL_TRANSFORM[name](measured["test"][name]) - mean) / std).astype(np.float32)
    return train, test, given


def mnist_morpho(mnist, share: float = SUPERVISED_SHARE, seed: int = MORPHO_SEED):
    """`mnist` with node labels `slant` (radians) and `thickness` (the log of the width in pixels),
    each standardised by the mean and standard deviation of the measured training images: given on
    a fixed `share` of the training images (NaN on the rest) and on every test image (to score the
    posterior against). Widths are right-skewed (a few digits are written three times thicker than
    the median); their log is close to Normal, the family of the node that reads it. Measures are
    cached by content under `$TFSTRUCTVAE_CACHE_DIR` (default ~/.cache/tfstructvae)."""
    from tfstructvae.data.formats import ImageDataset, checked

    every, test, given = standardised_measures(mnist, share, seed)
    train = {name: np.where(given, v, np.nan).astype(np.float32)[:, None] for name, v in every.items()}
    test = {name: v[:, None] for name, v in test.items()}
    return checked(ImageDataset("mnist_morpho", mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test,
                                mnist.num_classes, f"{mnist.source} with slant and thickness measured "
                                f"(given on {given.sum()} training images)", train, test))
