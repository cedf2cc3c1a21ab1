"""Every accepted format, written by the ecosystem's libraries, reads back the same samples,
rate, gain and positions, and `neurocyte detect` finds the same spikes in each."""

from __future__ import annotations

import io

import numpy as np
import pytest

from neurocyte_shared.formats import InvalidRecording, identify, list_streams, open_reader
from neurocyte_shared.science.detection import DetectionParams
from neurocyte_shared.science.detection.windows import LocalRecording, detect_recording
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from ..samples import FORMATS, convert, load_binary, write_nwb

pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    bin_path, json_path, _ = write_recording(
        folder, "src", SyntheticSpec(n_channels=16, duration_s=4.0, n_units=8, seed=3)
    )
    return bin_path, json_path


def _open(files: dict[str, bytes], stream=None):
    fmt, roles = identify(list(files))
    opener = lambda n: io.BytesIO(files[n])  # noqa: E731
    streams = list_streams(fmt, roles, opener)
    return (
        fmt,
        streams,
        open_reader(
            fmt, roles, opener, {n: len(b) for n, b in files.items()}, stream or (streams[0] if streams else None)
        ),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_the_recording(source, tmp_path, fmt):
    data, side = load_binary(*source)
    files = convert(*source, fmt, tmp_path)
    name, streams, reader = _open(files)
    info = reader.info
    assert (info.sampling_rate_hz, info.n_channels, info.n_samples) == (20_000.0, 16, data.shape[0])
    window = reader.read(1000, 3000).astype(np.int64)
    # Same samples up to the format's integer offset (uint16 formats store them shifted).
    diff = window - data[1000:3000].astype(np.int64)
    assert np.ptp(diff) == 0, f"{fmt}: samples differ by more than a constant"
    if fmt not in ("brw4", "spikeglx"):  # these two formats fix their own gain
        assert info.gain_uv == pytest.approx(side["gain_uv"])
    if fmt not in ("mcs_h5", "brw4"):  # these two place electrodes on their own grid
        assert np.allclose(info.channel_locations_um, side["channel_locations_um"])
    if fmt == "maxwell_wells":
        assert streams == ("well000", "well001")
        other = _open(files, "well001")[2]
        np.testing.assert_array_equal(other.read(1000, 3000), reader.read(1000, 3000)[:, ::-1])
        other.close()
        with pytest.raises(InvalidRecording, match="holds 2 recordings"):
            open_reader(name, identify(list(files))[1], lambda n: io.BytesIO(files[n]), {})
    reader.close()


def test_detect_finds_the_same_spikes_in_every_format_that_keeps_gain_and_positions(source, tmp_path):
    """Offsets (uint16 formats) and layouts must not change a spike: same table as the raw binary."""
    tables = {}
    for fmt in ("raw_binary", "maxwell_legacy", "maxwell_wells", "nwb"):
        files = convert(*source, fmt, tmp_path / fmt)
        paths = []
        for n, b in files.items():
            (tmp_path / fmt / n).write_bytes(b)
            paths.append(tmp_path / fmt / n)
        rec = LocalRecording(tuple(paths), stream="well000" if fmt == "maxwell_wells" else None)
        parts = list(detect_recording(rec, DetectionParams()))
        tables[fmt] = np.concatenate([np.stack([p.sample_index, p.channel_index], 1) for p in parts])
    assert len(tables["raw_binary"]) > 50
    for fmt, t in tables.items():
        np.testing.assert_array_equal(t, tables["raw_binary"], err_msg=fmt)


def test_nwb_with_an_lfp_series_reads_the_raw_one_and_two_probes_are_two_recordings(source, tmp_path):
    data, side = load_binary(*source)
    loc = np.asarray(side["channel_locations_um"])
    write_nwb(tmp_path / "lfp.nwb", data, loc, conversion=1.95e-7, rate=20_000.0, series={"LFP": 1_000.0})
    fmt, streams, r = _open({"lfp.nwb": (tmp_path / "lfp.nwb").read_bytes()})
    assert streams == ("ElectricalSeries",) and r.info.sampling_rate_hz == 20_000.0
    r.close()
    write_nwb(tmp_path / "two.nwb", data, loc, conversion=1.95e-7, rate=20_000.0, series={"Probe2": 30_000.0})
    fmt, streams, r = _open({"two.nwb": (tmp_path / "two.nwb").read_bytes()})
    assert streams == ("ElectricalSeries", "Probe2")
    r.close()


def test_nwb_refusals_say_why(source, tmp_path):
    import h5py

    data, side = load_binary(*source)
    path = tmp_path / "slow.nwb"
    write_nwb(path, data, np.asarray(side["channel_locations_um"]), conversion=1.95e-7, rate=1_000.0)
    with pytest.raises(InvalidRecording, match="sampled at 1000 Hz"):
        _open({"slow.nwb": path.read_bytes()})
    with h5py.File(tmp_path / "empty.nwb", "w") as f:
        f.create_group("acquisition")
    with pytest.raises(InvalidRecording, match="no ElectricalSeries"):
        _open({"empty.nwb": (tmp_path / "empty.nwb").read_bytes()})
    path = tmp_path / "gains.nwb"
    write_nwb(path, data, np.asarray(side["channel_locations_um"]), conversion=1.95e-7, rate=20_000.0)
    with h5py.File(path, "a") as f:
        f["acquisition/ElectricalSeries/channel_conversion"] = np.linspace(1, 2, data.shape[1])
    with pytest.raises(InvalidRecording, match="different gain per channel"):
        _open({"gains.nwb": path.read_bytes()})


def _declare_more_than_stored(path, factor: int, write_first_chunk: bool) -> None:
    """Replace the file's signal (its largest datasets) with one `factor` times as long along
    its longest axis, with the same attributes, and no chunk written (or only the first)."""
    import h5py

    with h5py.File(path, "r+") as f:
        found = []
        f.visititems(lambda name, obj: found.append((obj.size, name)) if isinstance(obj, h5py.Dataset) else None)
        biggest = max(found)[0]
        for _, name in (x for x in found if x[0] == biggest):  # every well of a multi-well file
            old = f[name]
            data, attrs, dtype = old[()], dict(old.attrs), old.dtype
            axis = int(np.argmax(data.shape))
            shape = tuple(n * factor if i == axis else n for i, n in enumerate(data.shape))
            chunks = tuple(min(n, 4096) if i == axis else n for i, n in enumerate(data.shape))
            del f[name]
            new = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, maxshape=shape)
            for k, v in attrs.items():
                new.attrs[k] = v
            if write_first_chunk:
                first = tuple(slice(0, c) for c in chunks)
                new[first] = data[first]


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f not in ("raw_binary", "spikeglx")])
@pytest.mark.parametrize("write_first_chunk", [False, True])
def test_a_file_that_declares_more_samples_than_it_stores_is_refused(source, tmp_path, fmt, write_first_chunk):
    """A 10^6-times-longer declared signal with nothing (or one chunk) stored would read as
    fill values: the reader refuses it, before any sample is read, and says how much is missing."""
    files = convert(*source, fmt, tmp_path)
    (name,) = files
    _declare_more_than_stored(tmp_path / name, 1_000_000, write_first_chunk)
    data = (tmp_path / name).read_bytes()
    with pytest.raises(InvalidRecording, match="declares .* but stores") as refused:
        _open({name: data})
    message = str(refused.value)
    assert ("stores 1 of" if write_first_chunk else "stores 0 of") in message
    assert "damaged (its storage" not in message and "Upload the complete recording" in message
