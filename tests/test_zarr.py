"""Samples in a zarr array (optional extra ``zarr``): read rows at a time, checked from the
header, refused plainly without the extra."""

import sys

import numpy as np
import pytest

from specsched.data.scaling import DataScalingWarning
from specsched.data.sources import open_source
from specsched.errors import InputError
from specsched.spectrum import estimate_spectrum

zarr = pytest.importorskip("zarr")


def _array(path, x, chunk_rows):
    z = zarr.create_array(store=str(path), shape=x.shape, chunks=(chunk_rows,) + x.shape[1:],
                          dtype=x.dtype)
    z[:] = x
    return path


def test_zarr_rows_read_chunk_by_chunk_equal_the_array(tmp_path):
    x = np.random.default_rng(1).standard_normal((53, 4, 3)).cumsum(axis=1).astype(np.float32)
    src = open_source(_array(tmp_path / "x.zarr", x, 10), part_size=25)
    assert src.kind == "zarr" and src.sample_shape == (4, 3) and src.n_samples == 53
    assert [(p.start, p.stop) for p in src.parts] == [(0, 20), (20, 40), (40, 53)]
    chunks = list(src.iter_chunks(7))
    assert max(len(c) for c in chunks) == 7 and chunks[0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    got = estimate_spectrum(src, chunk_size=7)
    ref = np.linalg.eigvalsh(np.cov(x.reshape(53, -1).astype(np.float64), rowvar=False))[::-1]
    np.testing.assert_allclose(got.eigenvalues, ref, rtol=1e-10, atol=1e-13)


def test_zarr_uint8_read_as_pixels_and_bad_arrays_refused(tmp_path):
    px = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(2, 3, 2) * 20
    with pytest.warns(DataScalingWarning, match="uint8 samples read as 8-bit pixel values"):
        src = open_source(_array(tmp_path / "p.zarr", px, 1))
    np.testing.assert_allclose(np.concatenate(list(src.iter_chunks(4))), px / 255 * 2 - 1)
    with pytest.raises(InputError, match=r"i.zarr: .*int16"):
        open_source(_array(tmp_path / "i.zarr", np.zeros((3, 2), np.int16), 2))
    with pytest.raises(InputError, match=r"v.zarr: expected a zarr array of samples of shape "
                                         r"\(N, \.\.\.\).*got shape \(5,\)"):
        open_source(_array(tmp_path / "v.zarr", np.zeros(5), 5))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("samples", shape=(4, 2), dtype="f8")
    with pytest.raises(InputError, match=r"g.zarr: a zarr group, not an array; give the path "
                                         r"of its array of samples, e.g. .*g.zarr/samples"):
        open_source(tmp_path / "g.zarr")


def test_zarr_without_the_extra_names_it(tmp_path, monkeypatch):
    path = _array(tmp_path / "x.zarr", np.zeros((3, 2), np.float32), 2)
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now raises ImportError
    with pytest.raises(InputError, match=r"x.zarr: a zarr array; reading it needs the zarr "
                                         r"extra: pip install 'specsched\[zarr\]'"):
        open_source(path)
