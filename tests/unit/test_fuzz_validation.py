"""Malformed uploads thrown at validation (the checks ingest runs before anything is chunked):
each must be refused with a reason a person can act on, quickly, without any other error.
A refusal here is what makes ingest publish RecordingRejected instead of RecordingValidated,
so nothing reaches the chunker."""

from __future__ import annotations

import io
import json
import time

import h5py
import numpy as np
import pytest

from neurocyte_shared.formats import InvalidRecording, identify, list_streams, open_reader

RNG = np.random.default_rng(2026)
GOOD_SIDECAR = {"sampling_rate_hz": 20000, "n_channels": 4, "dtype": "int16", "gain_uv": 0.195, "offset_uv": 0.0,
                "layout": "samples_by_channels", "channel_locations_um": [[0, 0], [0, 20], [20, 0], [20, 20]]}
GOOD_BIN = (RNG.standard_normal((2000, 4)) * 100).astype("<i2").tobytes()


def _sidecar(**change) -> bytes:
    doc = {**GOOD_SIDECAR, **change}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def _h5(build) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def _maxwell(f, *, sig=None, mapping=True, lsb=6.29e-6):
    f.create_dataset("sig", data=sig if sig is not None else np.zeros((8, 4000), np.uint16), chunks=True)
    if mapping is True:
        m = np.zeros(4, dtype=[("channel", "<i4"), ("electrode", "<i4"), ("x", "<f8"), ("y", "<f8")])
        m["channel"] = [0, 2, 4, 6]
        f["mapping"] = m
    elif mapping is not None:
        f["mapping"] = mapping
    if lsb is not None:
        f["settings/lsb"] = lsb


def _mcs(f, *, data=None, tick=50, n_info=None, factor=59605, dtype="<i4"):
    f.attrs["McsHdf5ProtocolType"] = b"RawData"
    s = f.create_group("Data/Recording_0/AnalogStream/Stream_0")
    s.attrs["DataSubType"] = b"Electrode"
    data = np.zeros((4, 4000), dtype) if data is None else data
    s.create_dataset("ChannelData", data=data)
    n = data.shape[0] if n_info is None else n_info
    dt = np.dtype([("RowIndex", "<i4"), ("Label", h5py.string_dtype()), ("Exponent", "<i4"), ("ADZero", "<i4"),
                   ("Tick", "<i8"), ("ConversionFactor", "<i8")])
    s["InfoChannel"] = np.array([(i, f"E{i}", -12, 0, tick, factor) for i in range(n)], dtype=dt)


def _wells(f, *, wells=("well000",), lsb=6.29e-6, rate=20_000.0, raw=None, mapping=None, channels=True,
           skip=()):
    f["version"] = np.array([b"20190530"])
    for w in wells:
        g = f.create_group(f"wells/{w}/rec0000")
        if "lsb" not in skip:
            g["settings/lsb"] = np.array([lsb])
        if "sampling" not in skip:
            g["settings/sampling"] = np.array([rate])
        m = np.zeros(4, dtype=[("channel", "<i4"), ("electrode", "<i4"), ("x", "<f8"), ("y", "<f8")])
        m["channel"] = [3, 5, 7, 9]
        g["settings/mapping"] = m if mapping is None else mapping
        g.create_dataset("groups/routed/raw", data=np.zeros((4, 4000), np.uint16) if raw is None else raw,
                         chunks=True)
        if channels:
            g["groups/routed/channels"] = np.array([3, 5, 7, 9] if channels is True else channels, np.int32)


def _nwb(f, *, data=None, rate=20_000.0, conversion=1e-7, electrodes=None, table_rows=4, timing="rate",
         offset=0.0):
    series = f.create_group("acquisition/ElectricalSeries")
    series.attrs["neurodata_type"] = "ElectricalSeries"
    d = series.create_dataset("data", data=np.zeros((4000, 4), np.int16) if data is None else data, chunks=True)
    d.attrs["conversion"] = conversion
    d.attrs["offset"] = offset
    if timing == "rate":
        series["starting_time"] = 0.0
        series["starting_time"].attrs["rate"] = rate
    elif timing == "irregular":
        series["timestamps"] = np.cumsum(RNG.uniform(1e-5, 1e-4, size=4000))
    series["electrodes"] = np.arange(4) if electrodes is None else electrodes
    if table_rows is not None:
        t = f.create_group("general/extracellular_ephys/electrodes")
        t["id"] = np.arange(table_rows)
        t["rel_x"] = np.arange(table_rows, dtype=float) * 20
        t["rel_y"] = np.zeros(table_rows)


VALID_MAXWELL = _h5(_maxwell)
VALID_WELLS = _h5(lambda f: _wells(f, wells=("well000", "well001")))
VALID_NWB = _h5(_nwb)
VALID_MCS = _h5(_mcs)


def cases() -> list[tuple[str, dict[str, bytes]]]:
    out: list[tuple[str, dict[str, bytes]]] = []
    add = lambda label, files: out.append((label, files))  # noqa: E731
    # raw binary: truncations at random points that are not whole frames
    for cut in RNG.choice(np.arange(1, len(GOOD_BIN)), size=10, replace=False):
        if cut % 8:
            add(f"bin truncated to {cut} bytes", {"r.bin": GOOD_BIN[:cut], "r.json": _sidecar()})
    # raw binary: sidecars with absurd or inconsistent values
    for label, change in [
        ("rate 0", {"sampling_rate_hz": 0}),
        ("rate negative", {"sampling_rate_hz": -20000}),
        ("rate absurd", {"sampling_rate_hz": 1e12}),
        ("rate too slow for spikes", {"sampling_rate_hz": 1000}),
        ("0 channels", {"n_channels": 0}),
        ("200k channels", {"n_channels": 200_000}),
        ("NaN gain", {"gain_uv": float("nan")}),
        ("infinite gain", {"gain_uv": float("inf")}),
        ("zero gain", {"gain_uv": 0}),
        ("negative gain", {"gain_uv": -1}),
        ("dtype float64", {"dtype": "float64"}),
        ("layout transposed", {"layout": "channels_by_samples"}),
        ("locations short", {"channel_locations_um": [[0, 0]]}),
        ("locations NaN", {"channel_locations_um": [[0, 0]] * 3 + [[float("nan"), 0]]}),
        ("rate missing", {"sampling_rate_hz": ...}),
        ("gain missing", {"gain_uv": ...}),
        ("unknown field", {"gain": 0.195}),
        ("rate as text", {"sampling_rate_hz": "fast"}),
        ("channels say 3", {"n_channels": 3, "channel_locations_um": [[0, 0]] * 3}),
    ]:
        add(f"sidecar {label}", {"r.bin": GOOD_BIN, "r.json": _sidecar(**change)})
    # raw binary: broken sidecar documents and files
    add("sidecar not JSON", {"r.bin": GOOD_BIN, "r.json": b"sampling_rate_hz = 20000"})
    add("sidecar a list", {"r.bin": GOOD_BIN, "r.json": b"[1, 2, 3]"})
    add("sidecar empty", {"r.bin": GOOD_BIN, "r.json": b""})
    add("sidecar 2 MB", {"r.bin": GOOD_BIN, "r.json": b" " * 2_000_000 + b"{}"})
    add("empty bin", {"r.bin": b"", "r.json": _sidecar()})
    add("bin without sidecar", {"r.bin": GOOD_BIN})
    add("sidecar named differently", {"r.bin": GOOD_BIN, "other.json": _sidecar()})
    for i in range(5):
        add(f"random bytes as sidecar {i}", {"r.bin": GOOD_BIN, "r.json": RNG.bytes(int(RNG.integers(1, 400)))})
    for i in range(3):
        raw = bytearray(_sidecar())
        for _ in range(3):
            raw[int(RNG.integers(0, 12))] = int(RNG.integers(0, 256))  # bit rot in the document's opening
        add(f"sidecar opening corrupted {i}", {"r.bin": GOOD_BIN, "r.json": bytes(raw)})
    # unknown or disguised formats
    add("unknown extension", {"r.dat": GOOD_BIN})
    add("two recordings in one upload", {"a.raw.h5": VALID_MAXWELL, "b.raw.h5": VALID_MAXWELL})
    add("a PDF named .raw.h5", {"r.raw.h5": b"%PDF-1.7\n" + RNG.bytes(3000)})
    for i in range(4):
        add(f"random bytes as .raw.h5 {i}", {"r.raw.h5": RNG.bytes(int(RNG.integers(0, 5000)))})
    for i in range(4):
        add(f"random bytes as .h5 {i}", {"r.h5": RNG.bytes(int(RNG.integers(0, 5000)))})
    add("MCS file named .raw.h5 (extension disagrees)", {"r.raw.h5": VALID_MCS})
    add("MaxWell file named .h5 (extension disagrees)", {"r.h5": VALID_MAXWELL})
    # HDF5 files cut short or with a damaged signature
    for name, blob in (("maxwell", VALID_MAXWELL), ("mcs", VALID_MCS)):
        ext = ".raw.h5" if name == "maxwell" else ".h5"
        for frac in (0.2, 0.5, 0.9, 0.99):
            add(f"{name} truncated at {frac:.0%}", {f"r{ext}": blob[: int(len(blob) * frac)]})
        flipped = bytearray(blob)
        flipped[1] ^= 0xFF
        add(f"{name} signature bit flips", {f"r{ext}": bytes(flipped)})
    # HDF5 with wrong shapes or dtypes
    add("maxwell /sig 1-D", {"r.raw.h5": _h5(lambda f: _maxwell(f, sig=np.zeros(4000, np.uint16)))})
    add("maxwell /sig float", {"r.raw.h5": _h5(lambda f: _maxwell(f, sig=np.zeros((8, 100), np.float32)))})
    add("maxwell /sig strings", {"r.raw.h5": _h5(lambda f: _maxwell(f, sig=np.array([[b"a"] * 10] * 8)))})
    add("maxwell no /mapping", {"r.raw.h5": _h5(lambda f: _maxwell(f, mapping=None))})
    add("maxwell /mapping plain ints", {"r.raw.h5": _h5(lambda f: _maxwell(f, mapping=np.arange(4)))})
    bad_map = np.zeros(2, dtype=[("channel", "<i4"), ("x", "<f8"), ("y", "<f8")])
    bad_map["channel"] = [0, 99]
    add("maxwell /mapping beyond /sig", {"r.raw.h5": _h5(lambda f: _maxwell(f, mapping=bad_map))})
    add("maxwell lsb NaN", {"r.raw.h5": _h5(lambda f: _maxwell(f, lsb=float("nan")))})
    add("maxwell lsb negative", {"r.raw.h5": _h5(lambda f: _maxwell(f, lsb=-1.0))})
    add("maxwell lsb text", {"r.raw.h5": _h5(lambda f: _maxwell(f, lsb=b"six"))})
    add("maxwell no lsb", {"r.raw.h5": _h5(lambda f: _maxwell(f, lsb=None))})
    add("mcs ChannelData 3-D", {"r.h5": _h5(lambda f: _mcs(f, data=np.zeros((2, 2, 100), "<i4")))})
    add("mcs ChannelData float", {"r.h5": _h5(lambda f: _mcs(f, dtype="<f4"))})
    add("mcs InfoChannel count wrong", {"r.h5": _h5(lambda f: _mcs(f, n_info=3))})
    add("mcs Tick 0", {"r.h5": _h5(lambda f: _mcs(f, tick=0))})
    add("mcs gain 0", {"r.h5": _h5(lambda f: _mcs(f, factor=0))})
    add("mcs no streams", {"r.h5": _h5(lambda f: f.attrs.__setitem__("McsHdf5ProtocolType", b"RawData"))})
    add("plain HDF5", {"r.h5": _h5(lambda f: f.create_dataset("x", data=np.arange(10)))})
    # MaxWell multi-well layout
    add("wells: no recordings", {"r.raw.h5": _h5(lambda f: f.create_group("wells/well000"))})
    add("wells: no lsb", {"r.raw.h5": _h5(lambda f: _wells(f, skip=("lsb",)))})
    add("wells: no sampling", {"r.raw.h5": _h5(lambda f: _wells(f, skip=("sampling",)))})
    add("wells: sampling 0", {"r.raw.h5": _h5(lambda f: _wells(f, rate=0.0))})
    add("wells: sampling NaN", {"r.raw.h5": _h5(lambda f: _wells(f, rate=float("nan")))})
    add("wells: sampling 1 GHz", {"r.raw.h5": _h5(lambda f: _wells(f, rate=1e9))})
    add("wells: lsb infinite", {"r.raw.h5": _h5(lambda f: _wells(f, lsb=float("inf")))})
    add("wells: raw float", {"r.raw.h5": _h5(lambda f: _wells(f, raw=np.zeros((4, 100), np.float32)))})
    add("wells: raw 1-D", {"r.raw.h5": _h5(lambda f: _wells(f, raw=np.zeros(400, np.uint16)))})
    add("wells: routed channels not mapped", {"r.raw.h5": _h5(lambda f: _wells(f, channels=[100, 101, 102, 103]))})
    add(
        "wells: fewer raw rows than mapped",
        {"r.raw.h5": _h5(lambda f: _wells(f, raw=np.zeros((2, 100), np.uint16), channels=False))},
    )
    add(
        "wells: mapping without x/y",
        {"r.raw.h5": _h5(lambda f: _wells(f, mapping=np.array([(3,)], dtype=[("channel", "<i4")])))},
    )

    # one good well and one broken: the upload is refused, not half processed
    def _one_bad(f):
        _wells(f, wells=("well000",))
        _wells_bad = f.create_group("wells/well001/rec0000")
        _wells_bad.create_dataset("groups/routed/raw", data=np.zeros((4, 100), np.uint16))

    add("wells: second well broken", {"r.raw.h5": _h5(_one_bad)})
    for frac in (0.3, 0.6, 0.9):
        add(f"wells cut at {frac:.0%}", {"r.raw.h5": VALID_WELLS[: int(len(VALID_WELLS) * frac)]})
    # NWB
    add("nwb no acquisition", {"r.nwb": _h5(lambda f: f.create_group("general"))})
    add("nwb data 1-D", {"r.nwb": _h5(lambda f: _nwb(f, data=np.zeros(4000, np.int16)))})
    add("nwb data 3-D", {"r.nwb": _h5(lambda f: _nwb(f, data=np.zeros((100, 2, 2), np.int16)))})
    add("nwb data strings", {"r.nwb": _h5(lambda f: _nwb(f, data=np.array([[b"ab"] * 4] * 10)))})
    add("nwb rate 0", {"r.nwb": _h5(lambda f: _nwb(f, rate=0.0))})
    add("nwb rate NaN", {"r.nwb": _h5(lambda f: _nwb(f, rate=float("nan")))})
    add("nwb rate 1 kHz (LFP)", {"r.nwb": _h5(lambda f: _nwb(f, rate=1000.0))})
    add("nwb conversion infinite", {"r.nwb": _h5(lambda f: _nwb(f, conversion=float("inf")))})
    add("nwb conversion negative", {"r.nwb": _h5(lambda f: _nwb(f, conversion=-1e-7))})
    add("nwb offset NaN", {"r.nwb": _h5(lambda f: _nwb(f, offset=float("nan")))})
    add("nwb electrodes count wrong", {"r.nwb": _h5(lambda f: _nwb(f, electrodes=np.arange(3)))})
    add("nwb electrode beyond table", {"r.nwb": _h5(lambda f: _nwb(f, electrodes=np.array([0, 1, 2, 40])))})
    add("nwb no electrodes table", {"r.nwb": _h5(lambda f: _nwb(f, table_rows=None))})
    add("nwb no timing", {"r.nwb": _h5(lambda f: _nwb(f, timing=None))})
    add("nwb irregular timestamps", {"r.nwb": _h5(lambda f: _nwb(f, timing="irregular"))})
    for frac in (0.4, 0.8, 0.97):
        add(f"nwb cut at {frac:.0%}", {"r.nwb": VALID_NWB[: int(len(VALID_NWB) * frac)]})
    add("nwb random bytes", {"r.nwb": RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes()})
    return out


CASES = cases()


def test_there_are_at_least_fifty_malformed_inputs():
    assert len(CASES) >= 50, len(CASES)


@pytest.mark.parametrize("label, files", CASES, ids=[c[0] for c in CASES])
def test_malformed_upload_is_refused_with_a_reason(label, files):
    started = time.monotonic()
    with pytest.raises(InvalidRecording) as refused:
        fmt, roles = identify(list(files))
        opener = lambda n: io.BytesIO(files[n])  # noqa: E731
        for stream in list_streams(fmt, roles, opener) or (None,):  # as ingest does: every recording
            reader = open_reader(fmt, roles, opener, {n: len(b) for n, b in files.items()}, stream)
            reader.read(0, reader.info.n_samples)  # if it was accepted, the whole file must read
            reader.close()
    reason = str(refused.value)
    assert len(reason) > 20 and "Traceback" not in reason, reason
    assert time.monotonic() - started < 5, "validation must not hang"


@pytest.mark.parametrize(
    "files, words",
    [
        ({"r.raw.h5": VALID_MCS}, "Rename it to end in .h5"),
        ({"r.h5": VALID_MAXWELL}, "Rename it to end in .raw.h5"),
    ],
)
def test_extension_that_disagrees_with_the_content_is_named(files, words):
    fmt, roles = identify(list(files))
    with pytest.raises(InvalidRecording, match=words):
        open_reader(fmt, roles, lambda n: io.BytesIO(files[n]), {n: len(b) for n, b in files.items()})


@pytest.mark.parametrize(
    "files",
    [{"r.raw.h5": VALID_MAXWELL}, {"r.raw.h5": VALID_WELLS}, {"r.nwb": VALID_NWB}, {"r.h5": VALID_MCS}],
    ids=["maxwell", "wells", "nwb", "mcs"],
)
def test_the_files_the_cases_are_made_from_are_accepted(files):
    fmt, roles = identify(list(files))
    opener = lambda n: io.BytesIO(files[n])  # noqa: E731
    for stream in list_streams(fmt, roles, opener) or (None,):
        open_reader(fmt, roles, opener, {n: len(b) for n, b in files.items()}, stream).close()
