"""Extended Yale B faces: file names, PGM headers, the fixed split, lighting labels."""

import io
import os
import tarfile

import numpy as np
import pytest

from tfstructvae.data import DataError, load_dataset
from tfstructvae.data.yaleb import load_yaleb, parse_name

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "yaleb")


def pgm(value, comment=b""):
    return b"P5\n" + comment + b"24 24\n255\n" + bytes([value]) * 576


def write_archive(path, subjects=(1, 2, 5), directions=((0, 0), (-35, 15), (50, -20), (85, 45), (-110, 65),
                                                         (20, 10)), extra=()):
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"CroppedYale24/{name[:7]}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for s in subjects:
            for a, e in directions:
                add(f"yaleB{s:02d}_P00A{a:+04d}E{e:+03d}.pgm", pgm(s * 10 + len(str(a))))
            add(f"yaleB{s:02d}_P00_Ambient.pgm", pgm(1, comment=b"#@DOME@ ambient\n"))
        for name, data in extra:
            add(name, data)
    return str(path)


def test_names_parse_and_malformed_ones_are_refused_by_name():
    assert parse_name("yaleB07_P00A-110E+65.pgm") == (7, -110.0, 65.0)
    subject, a, e = parse_name("yaleB39_P00_Ambient.pgm")
    assert subject == 39 and np.isnan(a) and np.isnan(e)
    with pytest.raises(DataError, match=r"'yaleB07_P01A-110E\+65.pgm' is not a Yale B file name"):
        parse_name("yaleB07_P01A-110E+65.pgm")


def test_split_labels_and_lighting_of_a_small_archive(tmp_path):
    path = write_archive(tmp_path / "CroppedYale24.tar.gz")
    ds = load_yaleb(path)
    again = load_dataset("yaleb", str(tmp_path))
    np.testing.assert_array_equal(ds.x_test, again.x_test)                     # the split is fixed
    assert ds.num_classes == 3 and ds.image_shape == (24, 24, 1)
    assert len(ds.y_train) == 3 * 6 + 3 - 3 and np.bincount(ds.y_test).tolist() == [1, 1, 1]   # a fifth of 6
    light = ds.node_labels_train["lighting"]
    ambient = np.isnan(light).all(1)
    assert ambient.sum() == 3 and np.all(ds.x_train[ambient] == 1)              # comment headers skipped
    np.testing.assert_allclose(light[~ambient].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(light[~ambient].std(0), 1.0, atol=1e-5)


def test_malformed_member_is_refused(tmp_path):
    path = write_archive(tmp_path / "CroppedYale24.tar.gz", extra=[("yaleB01_P00A+000E+00_copy.pgm", pgm(3))])
    with pytest.raises(DataError, match="'yaleB01_P00A\\+000E\\+00_copy.pgm' is not a Yale B file name"):
        load_yaleb(path)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="Expected CroppedYale24.tar.gz or its extracted CroppedYale24/ folder"):
        load_dataset("yaleb", str(tmp_path / "elsewhere"))


@pytest.mark.skipif(not os.path.isdir(REAL), reason="the Yale B archive is not beside the checkout")
def test_the_real_archive():
    ds = load_dataset("yaleb", REAL)
    assert ds.num_classes == 38 and len(ds.y_train) + len(ds.y_test) == 2452
    assert np.bincount(ds.y_test).min() >= 11 and np.isnan(ds.node_labels_test["lighting"]).sum() == 0
