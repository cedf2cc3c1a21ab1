"""Readers and the refusals ingest sends to users."""

import io
import json

import numpy as np
import pytest

from neurocyte_shared.formats import InvalidRecording, identify, open_reader

from ..samples import write_brw, write_mcs

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
    with pytest.raises(InvalidRecording, match="neither /wells"):
        open_reader("maxwell_legacy", {"data": "x.raw.h5"}, lambda n: open(tmp_path / n, "rb"), {})
    (tmp_path / "y.raw.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(InvalidRecording, match="not a readable HDF5 file"):
        open_reader("maxwell_legacy", {"data": "y.raw.h5"}, lambda n: open(tmp_path / n, "rb"), {})


# --------------------------------------------------------------------------- Multi Channel Systems

from pathlib import Path  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "real-data"  # files written by MCS's software (see its README)


def _open_file(path: Path):
    fmt, roles = identify([path.name])
    return open_reader(fmt, roles, lambda n: open(path, "rb"), {path.name: path.stat().st_size})


def test_mcs_reads_gain_rate_grid_positions_and_windows(tmp_path):
    rng = np.random.default_rng(0)
    labels = [f"{c}{r}" for c in range(1, 9) for r in range(1, 9) if (c, r) not in ((1, 1), (1, 8), (8, 1), (8, 8))]
    data = rng.integers(-2000, 2000, size=(60, 5000)).astype(np.int32)
    write_mcs(tmp_path / "mea.h5", data, labels, adzero=3)
    r = _open_file(tmp_path / "mea.h5")
    info = r.info
    assert (info.format, info.sampling_rate_hz, info.n_channels, info.n_samples) == ("mcs_h5", 20_000.0, 60, 5000)
    assert info.gain_uv == pytest.approx(59605e-12 * 1e6) and info.offset_uv == pytest.approx(-3 * info.gain_uv)
    assert info.channel_ids[0] == "12" and info.channel_locations_um[0] == (0.0, 200.0)
    assert info.channel_locations_um[labels.index("87")] == (1400.0, 1200.0)
    np.testing.assert_array_equal(r.read(1234, 2345), data[:, 1234:2345].T)
    r.close()


@pytest.mark.parametrize("change, words", [
    ({"tick_us": 2000}, "sampled at 500 Hz"),
    ({"protocol": b"Something"}, "not a Multi Channel Systems recording"),
    ({"factor": 0}, "invalid gains"),
])
def test_mcs_refusals_say_why(tmp_path, change, words):
    write_mcs(tmp_path / "x.h5", np.zeros((4, 100), np.int32), ["E1", "E2", "E3", "E4"], **change)
    with pytest.raises(InvalidRecording, match=words):
        _open_file(tmp_path / "x.h5")


def test_real_mcs_files_written_by_mcs_software():
    r = _open_file(REAL / "mcs-w8-spikes-rawdata.h5")
    info = r.info
    assert (info.sampling_rate_hz, info.n_channels, info.n_samples, info.dtype) == (20_000.0, 8, 158_024, "int32")
    assert info.gain_uv == pytest.approx(381469e-9 * 1e6)  # ConversionFactor 381469, Exponent -9, in volts
    assert info.channel_ids == tuple(f"E{i}" for i in range(1, 9))
    block = r.read(0, 10)
    assert block.shape == (10, 8) and (block == -32768).all()  # the amplifier settling at the start
    r.close()
    with pytest.raises(InvalidRecording, match="500 Hz"):
        _open_file(REAL / "mcs-w8-standard-500hz.h5")


def test_real_mcs_stimulation_artefacts_make_no_spikes():
    """The real recording has a stimulus every 1.25 s, on all 8 electrodes at once, never at the
    rails: filtered, 50-1,600x the noise, ringing for ~10 ms. Detection found 190 spikes within
    15 ms of them before it looked for artefacts that do not clip; none may lie from 5 ms before
    to 15 ms after one. Each stimulus is reported, once, where it begins."""
    from neurocyte_shared.science.detection import detect_spikes, learn_recording
    from neurocyte_shared.science.detection.params import DetectionParams

    r = _open_file(REAL / "mcs-w8-spikes-rawdata.h5")
    raw, rate, gain = r.read(0, r.info.n_samples), r.info.sampling_rate_hz, r.info.gain_uv
    layout = np.asarray(r.info.channel_locations_um)
    r.close()
    stimuli = np.array([24_063, 49_046, 74_028, 99_010, 123_992, 148_975])  # where all 8 electrodes jump (samples)
    params = DetectionParams()
    noise, templates, gains, pooled = learn_recording(lambda a, b: raw[a:b], raw.shape[0], rate, params, gain,
                                                      channel_locations_um=layout)  # as the CLI does
    artefacts: list[int] = []
    found = detect_spikes(raw, rate, params, gain_uv=gain, noise_uv=noise, templates=templates, artefacts=artefacts,
                          channel_locations_um=layout, reference_gains=gains, pool_noise=pooled)
    lag = (found.sample_index[:, None] - stimuli[None, :]) / rate * 1e3
    assert len(found) > 0 and not ((lag > -5) & (lag < 15)).any()
    assert len(artefacts) == stimuli.size and np.abs(np.array(artefacts) - stimuli).max() <= 0.001 * rate
    # Peeling invents nothing on real noise: its few spikes are near the threshold, and no
    # template may be learned from noise crossings that then "explains" every 4.5x noise peak
    # (learning from spikes isolated only 1.5 ms apart did that: 77 spikes, not 26 unpeeled)
    plain = detect_spikes(raw, rate, DetectionParams(peel=False), gain_uv=gain, noise_uv=noise,
                          channel_locations_um=layout)
    assert len(templates) == 0 and len(found) == len(plain)


# --------------------------------------------------------------------------- SpikeGLX

NP1_META = """imAiRangeMax=0.6
imAiRangeMin=-0.6
imMaxInt=512
imSampRate=30000
nSavedChans=5
snsApLfSy=4,0,1
fileSizeBytes={size}
typeThis=imec
~imroTbl=(0,384)(0 0 0 500 250 1)(1 0 0 500 250 1)(2 0 0 500 250 1)(3 0 0 500 250 1)
~snsGeomMap=(NP1000,1,0,70)(0:43:0:1)(0:11:0:1)(0:59:20:1)(0:27:20:1)
"""


def _spikeglx(data: np.ndarray, meta: str):
    files = {"run_g0_t0.imec0.ap.bin": data.astype("<i2").tobytes(), "run_g0_t0.imec0.ap.meta": meta.encode()}
    fmt, roles = identify(list(files))
    assert fmt == "spikeglx"
    return open_reader(fmt, roles, lambda n: io.BytesIO(files[n]), {n: len(b) for n, b in files.items()})


def test_spikeglx_neuropixels_gain_positions_and_no_sync_channel():
    data = np.arange(5 * 1000, dtype=np.int16).reshape(1000, 5)
    r = _spikeglx(data, NP1_META.format(size=data.nbytes))
    info = r.info
    assert (info.sampling_rate_hz, info.n_channels, info.n_samples) == (30_000.0, 4, 1000)
    assert info.gain_uv == pytest.approx(0.6 / 512 / 500 * 1e6)  # 2.34 uV per bit
    assert info.channel_locations_um == ((43.0, 0.0), (11.0, 0.0), (59.0, 20.0), (27.0, 20.0))
    np.testing.assert_array_equal(r.read(10, 20), data[10:20, :4])  # the sync channel is not an electrode


@pytest.mark.parametrize("meta, words", [
    (NP1_META.format(size=999), "fileSizeBytes"),
    (NP1_META.format(size=10_000).replace("imSampRate=30000", "imSampRate=abc"), "not a number"),
    (NP1_META.format(size=10_000).replace("(3 0 0 500 250 1)", "(3 0 0 1000 250 1)"), "different or invalid gains"),
    (NP1_META.format(size=10_000).replace("nSavedChans=5\n", ""), "lacks nSavedChans"),
])
def test_spikeglx_refusals_say_why(meta, words):
    with pytest.raises(InvalidRecording, match=words):
        _spikeglx(np.zeros((1000, 5), np.int16), meta)


# --------------------------------------------------------------------------- 3Brain .brw v4

def test_brw_reads_conversion_grid_positions_and_frames(tmp_path):
    stored = np.array([0, 1, 64, 65, 4095])
    frames = np.random.default_rng(1).integers(0, 4096, size=(3000, stored.size))
    write_brw(tmp_path / "chip.brw", frames, stored)
    r = _open_file(tmp_path / "chip.brw")
    info = r.info
    assert (info.format, info.sampling_rate_hz, info.n_channels, info.n_samples) == ("brw4", 20_000.0, 5, 3000)
    assert info.gain_uv == pytest.approx(8250.0 / 4095) and info.offset_uv == pytest.approx(-4125.0)
    assert info.channel_locations_um[2] == (0.0, 60.0) and info.channel_locations_um[4] == (63 * 60.0, 63 * 60.0)
    np.testing.assert_array_equal(r.read(100, 200), frames[100:200])
    r.close()


def test_brw_event_based_and_partial_files_are_refused(tmp_path):
    stored = np.arange(4)
    write_brw(tmp_path / "ev.brw", np.zeros((10, 4)), stored,
              settings_extra={"DataSettings": {"EventsBasedRawRanges": {}}})
    with pytest.raises(InvalidRecording, match="event-based"):
        _open_file(tmp_path / "ev.brw")
    import h5py

    with h5py.File(tmp_path / "odd.brw", "w") as f:
        f["ExperimentSettings"] = np.array([json.dumps({"ValueConverter": {}, "TimeConverter": {}}).encode()])
    with pytest.raises(InvalidRecording, match="ExperimentSettings"):
        _open_file(tmp_path / "odd.brw")
