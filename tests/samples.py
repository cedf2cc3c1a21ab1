"""Small recordings in every accepted format, written with the libraries the ecosystem writes
them with (h5py for the vendors' HDF5 layouts, pynwb for NWB, plain bytes for SpikeGLX and
raw binary). `convert` rewrites one synthetic recording (int16, samples x channels) in a
format, so a test can check that every reader returns the same samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMATS = ("raw_binary", "maxwell_legacy", "maxwell_wells", "mcs_h5", "spikeglx", "brw4", "nwb")


def load_binary(bin_path: Path, json_path: Path) -> tuple[np.ndarray, dict]:
    side = json.loads(json_path.read_text())
    data = np.fromfile(bin_path, "<i2").reshape(-1, side["n_channels"])
    return data, side


def convert(bin_path: Path, json_path: Path, fmt: str, out: Path, name: str = "rec") -> dict[str, bytes]:
    """The upload (file name -> bytes) of the recording in `fmt`."""
    data, side = load_binary(bin_path, json_path)
    out.mkdir(parents=True, exist_ok=True)
    gain, fs = side["gain_uv"], side["sampling_rate_hz"]
    loc = np.asarray(side["channel_locations_um"], dtype=np.float64)
    if fmt == "raw_binary":
        return {f"{name}.bin": bin_path.read_bytes(), f"{name}.json": json_path.read_bytes()}
    if fmt == "maxwell_legacy":
        path = out / f"{name}.raw.h5"
        write_maxwell_legacy(path, data, loc, lsb_v=gain * 1e-6)
    elif fmt == "maxwell_wells":
        path = out / f"{name}.raw.h5"
        # Two wells: the recording, and the same one with its channels in reverse order.
        write_maxwell_wells(path, {"well000": data, "well001": data[:, ::-1]}, loc, lsb_v=gain * 1e-6, rate=fs)
    elif fmt == "mcs_h5":
        path = out / f"{name}.h5"
        labels = [f"{c}{r}" for c in range(1, 9) for r in range(1, 9)][: data.shape[1]]
        write_mcs(path, data.T.astype(np.int32), labels, tick_us=int(round(1e6 / fs)),
                  factor=int(round(gain * 1e-6 / 1e-12)), exponent=-12)
    elif fmt == "spikeglx":
        return spikeglx_files(name, data, loc, fs)
    elif fmt == "brw4":
        path = out / f"{name}.brw"
        write_brw(path, (data.astype(np.int32) + 2048).clip(0, 4095), np.arange(data.shape[1]), rate=fs)
    elif fmt == "nwb":
        path = out / f"{name}.nwb"
        write_nwb(path, data, loc, conversion=gain * 1e-6, rate=fs)
    else:
        raise ValueError(fmt)
    return {path.name: path.read_bytes()}


def write_maxwell_legacy(path: Path, data: np.ndarray, loc: np.ndarray, *, lsb_v: float) -> None:
    """Legacy MaxOne: amplifier channel 2*i carries electrode i; the odd rows are unrouted."""
    import h5py

    n = data.shape[1]
    sig = np.full((2 * n + 1, data.shape[0]), 512, dtype=np.uint16)
    sig[0 : 2 * n : 2] = (data.astype(np.int32) + 32768).T
    mapping = np.array([(2 * i, 1000 + i, loc[i, 0], loc[i, 1]) for i in range(n)],
                       dtype=[("channel", "<i4"), ("electrode", "<i4"), ("x", "<f8"), ("y", "<f8")])
    with h5py.File(path, "w") as f:
        f["version"] = np.array([b"20160704"])
        f.create_dataset("sig", data=sig, chunks=(sig.shape[0], min(4096, sig.shape[1])))
        f["mapping"] = mapping[::-1]  # stored out of order: readers sort by channel
        f["settings/lsb"] = np.array([lsb_v])


def write_maxwell_wells(path: Path, wells: dict[str, np.ndarray], loc: np.ndarray, *, lsb_v: float,
                        rate: float) -> None:
    """New layout (MaxTwo): /wells/wellNNN/rec0000/{settings, groups/routed/raw}. Routed rows
    are listed in groups/routed/channels, here in another order than the mapping."""
    import h5py

    with h5py.File(path, "w") as f:
        f["version"] = np.array([b"20190530"])
        for well, data in wells.items():
            n = data.shape[1]
            g = f.create_group(f"wells/{well}/rec0000")
            g["settings/sampling"] = np.array([rate])
            g["settings/lsb"] = np.array([lsb_v])
            g["settings/mapping"] = np.array(
                [(10 + i, 2000 + i, loc[i, 0], loc[i, 1]) for i in range(n)],
                dtype=[("channel", "<i4"), ("electrode", "<i4"), ("x", "<f8"), ("y", "<f8")])
            routed_channels = np.array([10 + i for i in range(n)][::-1], dtype=np.int32)
            raw = (data.astype(np.int32) + 32768).astype(np.uint16).T[::-1]  # row r = channel routed_channels[r]
            g.create_dataset("groups/routed/raw", data=np.ascontiguousarray(raw),
                             chunks=(n, min(4096, data.shape[0])))
            g["groups/routed/channels"] = routed_channels
            g["groups/routed/frame_nos"] = np.arange(data.shape[0], dtype=np.int64)


def write_mcs(path: Path, data: np.ndarray, labels: list[str], *, tick_us=50, factor=59605, exponent=-12,
              adzero=0, subtype=b"Electrode", protocol=b"RawData") -> None:
    """A Multi Channel Systems HDF5 file as MC_DataTool writes it (the layout of the real files)."""
    import h5py

    dt = np.dtype([("ChannelID", "<i4"), ("RowIndex", "<i4"), ("GroupID", "<i4"), ("Label", h5py.string_dtype()),
                   ("RawDataType", h5py.string_dtype()), ("Unit", h5py.string_dtype()), ("Exponent", "<i4"),
                   ("ADZero", "<i4"), ("Tick", "<i8"), ("ConversionFactor", "<i8")])
    info = np.array([(i, i, 0, lab, "Int", "V", exponent, adzero, tick_us, factor) for i, lab in enumerate(labels)],
                    dtype=dt)
    with h5py.File(path, "w") as f:
        f.attrs["McsHdf5ProtocolType"] = protocol
        f.attrs["McsHdf5ProtocolVersion"] = np.int32(1)
        s = f.create_group("Data/Recording_0/AnalogStream/Stream_0")
        s.attrs["DataSubType"] = subtype
        s.create_dataset("ChannelData", data=data, chunks=(data.shape[0], min(1000, data.shape[1])),
                         compression="gzip")
        s.create_dataset("InfoChannel", data=info)


def write_brw(path: Path, frames: np.ndarray, stored: np.ndarray, *, rate=20_000.0, settings_extra=None):
    import h5py

    settings = {"ValueConverter": {"MinAnalogValue": -4125.0, "MaxAnalogValue": 4125.0, "MinDigitalValue": 0,
                                   "MaxDigitalValue": 4095, "ScaleFactor": 1.0},
                "TimeConverter": {"FrameRate": rate}, "MeaPlate": {"Model": "Arena"}, **(settings_extra or {})}
    with h5py.File(path, "w") as f:
        f["ExperimentSettings"] = np.array([json.dumps(settings).encode()])
        f["Well_A1/Raw"] = frames.astype(np.uint16).ravel()  # frame-major
        f["Well_A1/StoredChIdxs"] = stored.astype(np.int32)


def spikeglx_files(name: str, data: np.ndarray, loc: np.ndarray, fs: float) -> dict[str, bytes]:
    """An imec AP stream: the electrodes plus the sync channel SpikeGLX always saves last."""
    n = data.shape[1]
    frames = np.concatenate([data, np.zeros((data.shape[0], 1), np.int16)], axis=1).astype("<i2")
    imro = "".join(f"({i} 0 0 500 250 1)" for i in range(n))
    geom = "".join(f"(0:{x:g}:{y:g}:1)" for x, y in loc)
    meta = "\n".join([
        f"imSampRate={fs:g}", f"nSavedChans={n + 1}", f"snsApLfSy={n},0,1", f"fileSizeBytes={frames.nbytes}",
        "typeThis=imec", "imAiRangeMax=0.6", "imMaxInt=512", f"~imroTbl=(0,{n}){imro}",
        f"~snsGeomMap=(NP1000,1,0,70){geom}", ""])
    return {f"{name}_g0_t0.imec0.ap.bin": frames.tobytes(), f"{name}_g0_t0.imec0.ap.meta": meta.encode()}


REPO = Path(__file__).resolve().parents[1]
NWB_PYTHON = REPO / ".nwb-venv" / "bin" / "python"


def write_nwb(path: Path, data: np.ndarray, loc: np.ndarray, *, conversion: float, rate: float,
              series: dict[str, float] | None = None) -> None:
    """An NWB file as pynwb writes it: electrodes with rel_x/rel_y, and an ElectricalSeries of
    int16 with `conversion` volts per unit in /acquisition (chunked, gzip). `series` adds more
    ElectricalSeries (name -> rate) over the same electrodes. pynwb runs in .nwb-venv (see
    tests/requirements-nwb.txt for why), made by `make setup`."""
    import subprocess
    import tempfile

    if not NWB_PYTHON.exists():
        raise RuntimeError(f"{NWB_PYTHON} is missing: run `make setup` (it installs pynwb there)")
    series = series or {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in.npz"
        np.savez(inputs, data=data, loc=loc, conversion=conversion, rate=rate,
                 series_names=np.array(list(series), dtype=str), series_rates=np.array(list(series.values()), float))
        done = subprocess.run([str(NWB_PYTHON), str(REPO / "tests" / "nwb_writer.py"), str(path), str(inputs)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"pynwb could not write {path}:\n{done.stderr[-2000:]}")
