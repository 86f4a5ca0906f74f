"""Extended Yale B cropped faces at 24x24: identity and lighting direction (Lee, Ho & Kriegman 2005).

The data (`CroppedYale24.tar.gz`, or the extracted `CroppedYale24/` folder) holds one 24x24
8-bit PGM per subject and light direction, named

    yaleB<SS>_P00A<sAAA>E<sEE>.pgm     subject SS, light azimuth AAA and elevation EE in degrees
    yaleB<SS>_P00_Ambient.pgm          ambient light only: no direction

Labels: the class is the subject (38 subjects, numbered 0..37 in the order of their ids), and
the node label `lighting` is (azimuth, elevation) standardised by the training images' mean
and standard deviation; the ambient images carry NaN there (no direction: unlabelled for that
node).

Split, the same for every user: for each subject, its directional images sorted by
(azimuth, elevation) are shuffled with a fixed seed and a fifth of them (rounded down) go to
the test set, so every identity is tested under lighting it was not trained on; the ambient
images stay in training.
"""

from __future__ import annotations

import os
import re
import tarfile

import numpy as np

from tfstructvae.data.formats import DataError, ImageDataset, checked

ARCHIVE, FOLDER = "CroppedYale24.tar.gz", "CroppedYale24"
NAME = re.compile(r"^yaleB(\d{2})_P00(?:A([+-]\d{3})E([+-]\d{2})|_Ambient)\.pgm$")
SIDE = 24
TEST_SHARE, SPLIT_SEED = 0.2, 0


def parse_name(name: str) -> tuple[int, float, float]:
    """File name -> (subject id, azimuth, elevation); NaN direction for an ambient image."""
    m = NAME.match(name)
    if not m:
        raise DataError(f"{name!r} is not a Yale B file name; expected yaleB<SS>_P00A<sAAA>E<sEE>.pgm "
                        "or yaleB<SS>_P00_Ambient.pgm")
    subject, azimuth, elevation = m.groups()
    if azimuth is None:
        return int(subject), float("nan"), float("nan")
    return int(subject), float(azimuth), float(elevation)


def read_pgm(data: bytes, name: str) -> np.ndarray:
    """A binary 24x24 8-bit PGM (comment lines allowed) -> (24, 24) uint8."""
    if not data.startswith(b"P5") or len(data) < SIDE * SIDE + 11:
        raise DataError(f"{name}: not a binary PGM of {SIDE}x{SIDE} pixels ({len(data)} bytes)")
    # The pixels are the last 576 bytes of every file (the header may carry '#' comments).
    return np.frombuffer(data[-SIDE * SIDE:], np.uint8).reshape(SIDE, SIDE)


def _files(path: str):
    """(file name, bytes) of every .pgm under the archive or folder at `path`."""
    if os.path.isfile(path):
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.endswith(".pgm"):
                        yield os.path.basename(member.name), tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{path}: cannot be read as a .tar.gz ({e}); truncated or corrupt") from e
        return
    for root, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            if name.endswith(".pgm"):
                with open(os.path.join(root, name), "rb") as f:
                    yield name, f.read()


def find_yaleb(directory: str) -> str | None:
    for candidate in (os.path.join(directory, ARCHIVE), os.path.join(directory, FOLDER)):
        if os.path.exists(candidate):
            return candidate
    return None


def load_yaleb(path: str) -> ImageDataset:
    """The faces, their subjects and standardised lighting, split as the module docstring says."""
    records = sorted((parse_name(name), read_pgm(data, name)) for name, data in _files(path))
    if not records:
        raise DataError(f"{path}: holds no yaleB*.pgm files")
    subjects = sorted({s for (s, _, _), _ in records})
    index = {s: i for i, s in enumerate(subjects)}
    x = np.stack([img for _, img in records])[..., None]
    y = np.array([index[s] for (s, _, _), _ in records], np.int64)
    light = np.array([[a, e] for (_, a, e), _ in records], np.float64)
    test = np.zeros(len(records), bool)
    rng = np.random.default_rng(SPLIT_SEED)
    for s in range(len(subjects)):
        directional = np.flatnonzero((y == s) & ~np.isnan(light[:, 0]))
        test[rng.permutation(directional)[: int(len(directional) * TEST_SHARE)]] = True
    known = ~test & ~np.isnan(light[:, 0])
    mean, std = light[known].mean(0), light[known].std(0)
    lighting = ((light - mean) / std).astype(np.float32)                      # NaN stays NaN
    return checked(ImageDataset("yaleb", x[~test], y[~test], x[test], y[test], len(subjects), path,
                                {"lighting": lighting[~test]}, {"lighting": lighting[test]}))
