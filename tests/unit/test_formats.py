"""Readers and the refusals ingest sends to users."""

import io
import json

import numpy as np
import pytest

from neurocyte_shared.formats import InvalidRecording, identify, open_reader

SIDECAR = {"sampling_rate_hz": 20000, "n_channels": 4, "dtype": "int16", "gain_uv": 0.195, "offset_uv": 0.0,
           "layout": "samples_by_channels", "channel_locations_um": [[0, 0], [0, 20], [20, 0], [20, 20]]}


def _binary(data: bytes, sidecar: dict):
    files = {"r.bin": data, "r.json": json.dumps(sidecar).encode()}
    fmt, roles = identify(list(files))
    return open_reader(fmt, roles, lambda n: io.BytesIO(files[n]), {n: len(b) for n, b in files.items()})


def test_binary_reads_samples_by_channels():
    x = np.arange(40, dtype="<i2").reshape(10, 4)
    reader = _binary(x.tobytes(), SIDECAR)
    assert reader.info.n_samples == 10 and reader.info.n_channels == 4
    np.testing.assert_array_equal(reader.read(2, 5), x[2:5])


@pytest.mark.parametrize("change, words", [
    ({"n_channels": 3}, "channel_locations_um lists 4 positions"),
    ({"sampling_rate_hz": 0}, "sampling_rate_hz"),
    ({"gain_uv": float("nan")}, "gain_uv"),
    ({"dtype": "float64"}, "dtype"),
    ({"layout": "channels_by_samples"}, "layout"),
])
def test_binary_sidecar_that_disagrees_is_refused(change, words):
    with pytest.raises(InvalidRecording, match=words):
        _binary(np.zeros((10, 4), "<i2").tobytes(), {**SIDECAR, **change})


def test_truncated_binary_is_refused_with_the_numbers():
    with pytest.raises(InvalidRecording, match="not a whole number of frames"):
        _binary(np.zeros((10, 4), "<i2").tobytes()[:-3], SIDECAR)


def test_missing_sidecar_and_unknown_formats_are_explained():
    with pytest.raises(InvalidRecording, match="without its JSON sidecar"):
        identify(["a.bin"])
    with pytest.raises(InvalidRecording, match="unsupported upload"):
        identify(["a.wav"])


def test_maxwell_legacy_only_mapped_rows_are_electrodes(tmp_path):
    h5py = pytest.importorskip("h5py")
    sig = (np.arange(6 * 50, dtype=np.uint16).reshape(6, 50))  # 6 amplifier rows, 50 samples
    path = tmp_path / "rec.raw.h5"
    with h5py.File(path, "w") as f:
        f["sig"] = sig
        f["version"] = np.array([b"20160704"])
        mapping = np.array([(4, 101, 17.5, 35.0), (1, 100, 0.0, 17.5)],
                           dtype=[("channel", "<i4"), ("electrode", "<i4"), ("x", "<f8"), ("y", "<f8")])
        f["mapping"] = mapping
        f["settings/lsb"] = np.array([6.29e-6])
    fmt, roles = identify(["rec.raw.h5"])
    reader = open_reader(fmt, roles, lambda n: open(tmp_path / n, "rb"), {})
    assert reader.info.n_channels == 2  # not the 6 rows of /sig
    assert reader.info.channel_locations_um == ((0.0, 17.5), (17.5, 35.0))  # sorted by channel
    assert reader.info.gain_uv == pytest.approx(6.29)
    np.testing.assert_array_equal(reader.read(10, 13), sig[[1, 4], 10:13].T)
    reader.close()


def test_hdf5_that_is_not_maxwell_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.raw.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(InvalidRecording, match="/sig is missing"):
        open_reader("maxwell_legacy", {"data": "x.raw.h5"}, lambda n: open(tmp_path / n, "rb"), {})
    (tmp_path / "y.raw.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(InvalidRecording, match="not a readable HDF5 file"):
        open_reader("maxwell_legacy", {"data": "y.raw.h5"}, lambda n: open(tmp_path / n, "rb"), {})
