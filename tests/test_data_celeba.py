"""CelebA from a zip or folder the test writes; the shared copy when present."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from energyad.config import data_root
from energyad.data import DataError, load_celeba


def jpeg(value, shape=(80, 70, 3)):
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_celeba_from_zip_and_folder(tmp_path):
    zpath = tmp_path / "faces.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in (3, 0, 2, 1):  # written out of order: loading sorts by name
            zf.writestr(f"{i:03d}.jpg", jpeg(40 * i))
    x = load_celeba(zpath, size=32, progress=False)
    assert x.shape == (4, 3, 32, 32) and x.dtype.is_floating_point
    assert np.allclose([x[i].mean().item() for i in range(4)], [40 * i / 255 for i in range(4)], atol=0.02)
    sub = load_celeba(zpath, n=2, size=16, progress=False, seed=3)
    assert sub.shape == (2, 3, 16, 16)
    assert np.array_equal(sub.numpy(), load_celeba(zpath, n=2, size=16, progress=False, seed=3).numpy())
    folder = tmp_path / "dir"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(jpeg(60 * i))  # content sniffed, not the extension
    assert load_celeba(folder, size=8, progress=False).shape == (3, 3, 8, 8)


def test_celeba_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope"):
        load_celeba(tmp_path / "nope")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.zip"):
        load_celeba(tmp_path / "bad.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images"):
        load_celeba(tmp_path / "empty")
    zpath = tmp_path / "trunc.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("000.jpg", jpeg(10))
        zf.writestr("001.jpg", jpeg(10)[:50])
    with pytest.raises(DataError, match="001.jpg"):
        load_celeba(zpath, progress=False)


@pytest.mark.skipif(not (data_root() / "celeba_64").is_dir(), reason="no celeba_64/ under ENERGYAD_DATA")
def test_shared_celeba_copy():
    x = load_celeba(n=16, size=64, progress=False)
    assert x.shape == (16, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05
