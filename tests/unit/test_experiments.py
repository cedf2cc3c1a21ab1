"""Experiments with known answers: a plate whose firing rate falls with the dose by a Hill curve
of known EC50, conditions with and without a planted difference, a days-in-vitro series with a
missing time point, and plate maps that must be refused with a reason. No AWS, no files:
summaries of Poisson spike trains."""

import numpy as np
import pytest

from neurocyte_shared.science.experiments import analysis, platemap
from neurocyte_shared.science.experiments.platemap import PlateMapError
from neurocyte_shared.science.experiments.table import to_csv, to_parquet
from neurocyte_shared.science.metrics import summarize
from neurocyte_shared.science.table import SpikeTable

FS = 10_000.0
HEADER = ",".join(platemap.COLUMNS)


def _summary(rate_hz: float, seed: int, channels: int = 16, seconds: float = 60.0):
    """Independent Poisson trains at rate_hz on every electrode of a 4 x 4 grid."""
    rng = np.random.default_rng(seed)
    t, c = [], []
    for ch in range(channels):
        n = rng.poisson(rate_hz * seconds)
        t.append(np.sort(rng.integers(0, int(seconds * FS), n)))
        c.append(np.full(n, ch, np.int32))
    t, c = np.concatenate(t), np.concatenate(c)
    order = np.lexsort((c, t))
    table = SpikeTable(t[order].astype(np.int64), c[order], np.full(t.size, -50.0, np.float32))
    return summarize(table, recording_id=f"r{seed}", recording_name=f"r{seed}", format="binary", n_channels=channels,
                     sampling_rate_hz=FS, n_samples=int(seconds * FS), channel_ids=tuple(map(str, range(channels))),
                     channel_locations_um=tuple((float(i % 4 * 100), float(i // 4 * 100)) for i in range(channels)),
                     detection_parameters={})


def _map(lines: list[str]) -> platemap.PlateMap:
    return platemap.parse("\n".join([HEADER, *lines]) + "\n")


def test_the_fitted_ec50_of_a_24_well_plate_is_within_15_percent_of_the_truth():
    ec50, slope = 1.0, 1.5  # uM; the rate falls as 1 / (1 + (c / EC50)^slope)
    doses = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    wells = [f"{r}{k}" for r in "ABCD" for k in range(1, 7)]
    lines, summaries = [], {}
    rng = np.random.default_rng(1)
    for i, well in enumerate(wells):
        dose = doses[i % 6]
        base_rate = rng.uniform(4, 8)
        lines += [f"{well}-base.bin,,{well},baseline,,,,,14,{i // 6 + 1},",
                  f"{well}-drug.bin,,{well},drug,TTX-like,{dose},uM,,14,{i // 6 + 1},{well}-base.bin"]
        summaries[(f"{well}-base.bin", None)] = _summary(base_rate, 2 * i)
        summaries[(f"{well}-drug.bin", None)] = _summary(base_rate / (1 + (dose / ec50) ** slope), 2 * i + 1)
    result, rows = analysis.analyse("dose", _map(lines), summaries)
    (compound,) = result["compounds"]
    rate = next(d for d in compound["dose_response"] if d["metric"] == "mean_firing_rate_hz")
    assert rate["kind"] == "IC50" and rate["note"] is None and rate["unit"] == "uM" and rate["n"] == 24
    assert abs(rate["ec50"] - ec50) / ec50 <= 0.15
    assert rate["ec50_ci"][0] < ec50 < rate["ec50_ci"][1]
    assert abs(abs(rate["hill_slope"]) - slope) / slope <= 0.3 and rate["hill_slope"] < 0
    assert any(s.startswith("TTX-like: IC50 of the weighted mean firing rate") for s in result["headline"])
    # reruns give byte-identical tables
    again, rows2 = analysis.analyse("dose", _map(lines), summaries)
    assert to_csv(rows) == to_csv(rows2) and to_parquet(rows) == to_parquet(rows2)


def test_a_planted_difference_is_found_and_no_difference_is_not():
    lines, summaries = [], {}
    for k in range(6):
        for i, (cond, rate) in enumerate((("control", 4.0), ("faster", 8.0), ("same", 4.0))):
            f = f"{cond}{k}.bin"
            lines.append(f"{f},,{'ABC'[i]}{k + 1},{cond},,,,,,,")
            # a fixed seed per well: hash() of a str differs from process to process, and one draw
            # in twenty makes "same" differ at p < 0.05 (the first of these seeds' offsets does)
            summaries[(f, None)] = _summary(rate, 10_000 + 100 * i + k)
    result, _ = analysis.analyse("two", _map(lines), summaries)
    rate = next(s for s in result["statistics"] if s["metric"] == "mean_firing_rate_hz")
    found = {c["condition"]: c for c in rate["comparisons"]}
    assert found["faster"]["significant"] is True and found["faster"]["cliffs_delta"] > 0.9
    assert found["same"]["significant"] is False
    assert found["faster"]["test"].startswith("Mann-Whitney") and found["faster"]["n"] == 6
    assert result["control"] == "control"


def test_no_significance_is_claimed_with_fewer_than_three_wells():
    lines = ["c0.bin,,A1,control,,,,,,,", "c1.bin,,A2,control,,,,,,,", "c2.bin,,A3,control,,,,,,,",
             "t0.bin,,B1,treated,,,,,,,", "t1.bin,,B2,treated,,,,,,,"]
    summaries = {(f"{x}.bin", None): _summary(3.0 if x[0] == "c" else 9.0, i) for i, x in
                 enumerate(["c0", "c1", "c2", "t0", "t1"])}
    result, _ = analysis.analyse("small", _map(lines), summaries)
    (c,) = next(s for s in result["statistics"] if s["metric"] == "mean_firing_rate_hz")["comparisons"]
    assert c["p"] is None and c["significant"] is None and c["n"] == 2


def test_a_div_series_shows_growth_and_reports_a_missing_time_point():
    lines, summaries = [], {}
    for well in ("A1", "A2", "A3"):
        for div, rate in ((7, 1.0), (14, 3.0), (21, 6.0)):
            if (well, div) == ("A2", 14):
                continue  # not recorded
            f = f"{well}-div{div}.bin"
            lines.append(f"{f},,{well},WT,,,,,{div},,")
            summaries[(f, None)] = _summary(rate, div * 10 + int(well[1]))
    result, rows = analysis.analyse("div", _map(lines), summaries)
    (traj,) = [t for t in result["div"]["trajectories"] if t["metric"] == "mean_firing_rate_hz"]
    medians = [p["median"] for p in traj["points"]]
    assert [p["div"] for p in traj["points"]] == [7, 14, 21] and medians == sorted(medians)
    assert medians[-1] > 4 * medians[0]
    assert [p["n"] for p in traj["points"]] == [3, 2, 3]  # the missing one is not interpolated
    assert result["div"]["missing_time_points"] == ["well A2 (WT): no recording at DIV 14"]


def test_a_well_with_too_few_active_electrodes_is_excluded_with_its_reason():
    lines = ["a.bin,,A1,control,,,,,,,", "b.bin,,A2,control,,,,,,,"]
    summaries = {("a.bin", None): _summary(4.0, 1), ("b.bin", None): _summary(0.01, 2)}
    result, rows = analysis.analyse("q", _map(lines), summaries)
    assert [r["excluded"] for r in rows] == [False, True]
    assert "too few active electrodes" in result["excluded"][0]["reason"]


def test_a_stimulated_well_has_its_response_in_the_tidy_table():
    """Stimulation experiments compare wells by how many electrodes answer: a well with 30
    stimuli to which 4 electrodes respond at 10 ms, beside an unstimulated one."""
    plain = _summary(4.0, 3)
    rng = np.random.default_rng(4)
    stimuli = np.arange(1.0, 59.0, 2.0)
    t, c = [], []
    for ch in range(16):
        x = np.sort(rng.uniform(0, 60.0, rng.poisson(240)))
        if ch < 4:
            x = np.sort(np.concatenate([x, stimuli + 0.01]))
        t.append(x)
        c.append(np.full(x.size, ch, np.int32))
    t, c = np.concatenate(t), np.concatenate(c)
    order = np.argsort(t)
    table = SpikeTable((t[order] * FS).astype(np.int64), c[order], np.full(t.size, -50.0, np.float32))
    stimulated = summarize(table, recording_id="s", recording_name="s", format="binary", n_channels=16,
                           sampling_rate_hz=FS, n_samples=int(60 * FS), channel_ids=tuple(map(str, range(16))),
                           channel_locations_um=tuple((float(i % 4 * 100), float(i // 4 * 100)) for i in range(16)),
                           detection_parameters={}, artefact_samples=(stimuli * FS).astype(np.int64))
    lines = ["a.bin,,A1,control,,,,,,,", "b.bin,,A2,control,,,,,,,"]
    _, rows = analysis.analyse("stim", _map(lines), {("a.bin", None): plain, ("b.bin", None): stimulated})
    by_file = {r["file"]: r for r in rows}
    assert (by_file["a.bin"]["stimuli"], by_file["a.bin"]["responding_electrodes"]) == (0, None)
    assert (by_file["b.bin"]["stimuli"], by_file["b.bin"]["responding_electrodes"]) == (29, 4)
    assert abs(by_file["b.bin"]["response_latency_ms"] - 10.0) < 0.5
    assert b"responding_electrodes" in to_csv(rows).splitlines()[0] and to_parquet(rows)


@pytest.mark.parametrize("lines, words", [
    (["a.bin,,A1,control,drug,10,,,,,"], "concentration 10 has no concentration_unit"),
    (["a.bin,,A1,control,drug,ten,uM,,,,"], "'ten' is not a number"),
    (["a.bin,,A1,drug,X,1,uM,,,,base.bin"], "baseline_file base.bin has no row for well A1"),
    (["a.bin,,A1,control,,,,,,,", "a.bin,,A2,control,,,,,,,"], "a.bin is already on line 2"),
    (["a.bin,,,control,,,,,,,"], "well"),
    (["a.bin,,A1,control,,,,,seven,,"], "'seven' is not a whole number"),
    (["../a.bin,,A1,control,,,,,,,"], "inside the plate map's folder"),
    (["a.bin,,A1,control"], "4 cells, the header has 11"),
])
def test_bad_plate_maps_are_refused_with_the_line_and_the_reason(lines, words):
    with pytest.raises(PlateMapError) as err:
        _map(lines)
    assert any(words in p for p in err.value.problems), err.value.problems
    assert all(p.startswith("line ") for p in err.value.problems)


def test_a_header_a_missing_file_and_a_missing_well_are_refused():
    with pytest.raises(PlateMapError, match="missing baseline_file"):
        platemap.parse("file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate\n")
    text = HEADER + "\nplate.raw.h5,well007,A1,control,,,,,,,\ngone.bin,,A2,control,,,,,,,\n"
    with pytest.raises(PlateMapError) as err:
        platemap.parse(text, exists=lambda f: f == "plate.raw.h5", streams=lambda f: ["well000", "well001"])
    assert "line 3: file gone.bin is not there" in err.value.problems
    assert "line 2: plate.raw.h5 has no well 'well007' (it has well000, well001)" in err.value.problems


def test_a_recording_exported_as_nwb_reads_back_and_passes_the_schema_and_the_inspector(tmp_path):
    """Written with h5py to the schema; read by pynwb and checked by the NWB Inspector (in .nwb-venv):
    no schema error and nothing the Inspector calls critical."""
    import json
    import subprocess
    from datetime import UTC, datetime

    from neurocyte_shared.science.experiments import nwb

    from ..samples import NWB_PYTHON, REPO

    row = _map(["A1-dosed.bin,,A1,drug,bicuculline,10,uM,WT,21,2,"]).rows[0]
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 200_000, 500))
    c = rng.integers(0, 16, 500)
    path = tmp_path / "A1.nwb"
    nwb.write(path, identifier="A1-dosed", session_start=datetime(2026, 12, 3, tzinfo=UTC), description="well A1",
              experiment="plate7", sampling_rate_hz=20_000.0, channel_ids=tuple(map(str, range(16))),
              channel_locations_um=[(i % 4 * 100.0, i // 4 * 100.0) for i in range(16)], sample_index=t,
              channel_index=c, row=row)
    out = subprocess.run([str(NWB_PYTHON), str(REPO / "tests" / "nwb_check.py"), str(path)], capture_output=True,
                         text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["valid"] == []
    assert not [m for m in report["inspector"] if m[0] in ("CRITICAL", "PYNWB_VALIDATION", "ERROR")], report
    assert report["units"] == len(np.unique(c)) and report["spikes"] == 500 and report["electrodes"] == 16
    assert report["pharmacology"] == "bicuculline at 10 uM" and report["subject_id"] == "well A1"
