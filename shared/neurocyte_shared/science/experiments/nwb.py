"""A recording's spikes and its experiment metadata as an NWB file (NWB 2.x, written with h5py to
the schema: no pynwb, which brings pandas; the tests read it back with pynwb and check it with the
NWB Inspector), ready for DANDI.

Each electrode with spikes is one row of the Units table: its threshold crossings (multi-unit
activity; Neurocyte does not sort spikes into neurons), linked to its row of the electrodes
table, which has each electrode's position on the array. The plate map's row goes where NWB
keeps it: the compound and its concentration in `general/pharmacology`, the well as the subject
(a culture), days in vitro as its age, the condition and the rest in `general/notes`."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

NWB_VERSION = "2.8.0"


def write(path: Path, *, identifier: str, session_start: datetime, description: str, experiment: str,
          sampling_rate_hz: float, channel_ids: tuple[str, ...], channel_locations_um, sample_index: np.ndarray,
          channel_index: np.ndarray, row=None, device: str = "multi-electrode array") -> None:
    """Write one recording's NWB file; `row` is its plate-map row (a PlateMapRow), if any."""
    import h5py

    text = h5py.string_dtype()
    n = len(channel_ids)
    locations = np.asarray(channel_locations_um, dtype=np.float64).reshape(n, -1)
    with h5py.File(path, "w") as f:
        _typed(f, "core", "NWBFile", nwb_version=NWB_VERSION)
        f.create_dataset("file_create_date", data=np.array([session_start.isoformat()], dtype=object), dtype=text)
        for name, value in (("identifier", identifier), ("session_description", description),
                            ("session_start_time", session_start.isoformat()),
                            ("timestamps_reference_time", session_start.isoformat())):
            f.create_dataset(name, data=value, dtype=text)
        for group in ("acquisition", "analysis", "processing", "stimulus/presentation", "stimulus/templates"):
            f.require_group(group)
        general = f.create_group("general")
        general.create_dataset("experiment_description", data=f"Neurocyte experiment {experiment}", dtype=text)
        general.create_dataset("session_id", data=identifier, dtype=text)
        general.create_dataset("keywords", data=np.array(["multi-electrode array", "extracellular", "spikes",
                                                          experiment], dtype=object), dtype=text)
        if row is not None:
            _plate_row(general, row, text)
        dev = general.create_group(f"devices/{device}")
        _typed(dev, "core", "Device", description="the recording's array", manufacturer="unknown")
        ephys = general.create_group("extracellular_ephys")
        group = ephys.create_group("array")
        _typed(group, "core", "ElectrodeGroup", description="every electrode of the array", location="culture")
        group["device"] = h5py.SoftLink(f"/general/devices/{device}")
        electrodes = ephys.create_group("electrodes")
        _table(electrodes, "core", "ElectrodesTable", "the array's electrodes, positions in um",
               ["location", "group", "group_name", "rel_x", "rel_y"], n)
        _column(electrodes, "location", np.array(["culture"] * n, dtype=object), "location of the electrode", text)
        refs = np.array([group.ref] * n, dtype=h5py.ref_dtype)
        _column(electrodes, "group", refs, "reference to the ElectrodeGroup", h5py.ref_dtype)
        _column(electrodes, "group_name", np.array(["array"] * n, dtype=object), "name of the ElectrodeGroup", text)
        _column(electrodes, "rel_x", locations[:, 0], "x position on the array (um)")
        _column(electrodes, "rel_y", locations[:, 1] if locations.shape[1] > 1 else np.zeros(n),
                "y position on the array (um)")

        units = f.create_group("units")
        order = np.lexsort((np.asarray(sample_index), np.asarray(channel_index)))
        chans = np.asarray(channel_index, np.int64)[order]
        times = np.asarray(sample_index, np.float64)[order] / sampling_rate_hz
        rows = np.unique(chans)
        _table(units, "core", "Units", "threshold crossings of each electrode (multi-unit activity, not sorted into "
               "neurons), detected by Neurocyte", ["spike_times", "electrodes"], rows.size)
        st = _column(units, "spike_times", times, "spike times (s) from the recording's start",
                     resolution=1.0 / sampling_rate_hz)
        _index(units, "spike_times_index", np.searchsorted(chans, rows, side="right"), st, "spike_times")
        el = _column(units, "electrodes", rows, "the electrode whose crossings these are", typ="DynamicTableRegion",
                     table=electrodes.ref)
        _index(units, "electrodes_index", np.arange(1, rows.size + 1), el, "electrodes")


def _typed(obj, namespace: str, kind: str, **attrs) -> None:
    obj.attrs["namespace"] = namespace
    obj.attrs["neurodata_type"] = kind
    obj.attrs["object_id"] = str(uuid.uuid4())
    for k, v in attrs.items():
        obj.attrs[k] = v


def _table(group, namespace: str, kind: str, description: str, colnames: list[str], rows: int) -> None:
    import h5py

    _typed(group, namespace, kind, description=description)
    group.attrs.create("colnames", np.array(colnames, dtype=object), dtype=h5py.string_dtype())
    ids = group.create_dataset("id", data=np.arange(rows, dtype=np.int64))
    _typed(ids, "hdmf-common", "ElementIdentifiers")


def _column(group, name: str, data, description: str, dtype=None, typ: str = "VectorData", **attrs):
    ds = group.create_dataset(name, data=data, dtype=dtype)
    _typed(ds, "hdmf-common", typ, description=description, **attrs)
    return ds


def _index(group, name: str, ends: np.ndarray, target, what: str) -> None:
    ds = group.create_dataset(name, data=np.asarray(ends, np.uint64))  # the schema's indices are unsigned
    _typed(ds, "hdmf-common", "VectorIndex", description=f"Index for VectorData '{what}'", target=target.ref)


def _plate_row(general, row, text) -> None:
    """The plate map's row, in NWB's own fields."""
    if row.compound:
        dose = f" at {row.concentration:g} {row.concentration_unit}" if row.concentration is not None else ""
        general.create_dataset("pharmacology", data=f"{row.compound}{dose}", dtype=text)
    notes = [f"well {row.well}", f"condition {row.condition}"]
    notes += [f"{k} {getattr(row, k)}" for k in ("genotype", "div", "replicate", "stream", "baseline_file")
              if getattr(row, k) is not None]
    general.create_dataset("notes", data="; ".join(notes), dtype=text)
    subject = general.create_group("subject")
    _typed(subject, "core", "Subject")
    subject.create_dataset("subject_id", data=f"well {row.well}", dtype=text)
    subject.create_dataset("sex", data="U", dtype=text)  # a culture: unknown, as the schema spells it
    subject.create_dataset("description", data=f"neuronal culture in well {row.well} ({row.condition})", dtype=text)
    if row.genotype:
        subject.create_dataset("genotype", data=row.genotype, dtype=text)
    if row.div is not None:
        subject.create_dataset("age", data=f"P{row.div}D", dtype=text)
        subject["age"].attrs["reference"] = "birth"
