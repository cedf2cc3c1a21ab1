"""`neurocyte detect` on a file: windows with margins give the whole-array result."""

import platform
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from neurocyte_cli.main import cli
from neurocyte_shared.science.detection import DetectionParams, detect_spikes, learn_recording
from neurocyte_shared.science.synthetic import SyntheticSpec, grid_locations, write_recording


def test_detect_command_matches_whole_array_detection(tmp_path):
    spec = SyntheticSpec(n_channels=16, duration_s=6.0, n_units=8, seed=5)
    bin_path, json_path, _ = write_recording(tmp_path, "r", spec)
    out = tmp_path / "spikes.csv"
    result = CliRunner().invoke(cli, ["detect", str(bin_path), str(json_path), "--out", str(out),
                                      "--window-s", "1", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    got = np.loadtxt(out, delimiter=",", skiprows=1)

    raw = np.fromfile(bin_path, "<i2").reshape(-1, 16)
    params = DetectionParams()
    loc = grid_locations(16, spec.pitch_um)
    # what the command learns of the whole recording, given to one window that is the whole array
    learned = learn_recording(lambda a, b: raw[a:b], raw.shape[0], spec.sampling_rate_hz, params, spec.gain_uv,
                              channel_locations_um=loc)
    whole = detect_spikes(raw, spec.sampling_rate_hz, params, gain_uv=spec.gain_uv, noise_uv=learned.noise_uv,
                          channel_locations_um=loc, templates=learned.templates,
                          reference_gains=learned.reference_gains, pool_noise=learned.pool_noise)
    assert len(whole) > 50
    np.testing.assert_array_equal(got[:, 0], whole.sample_index)
    np.testing.assert_array_equal(got[:, 1], whole.channel_index)


def test_detect_refuses_a_bad_file_without_a_traceback(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\0" * 7)
    (tmp_path / "x.json").write_text('{"sampling_rate_hz": 20000}')
    result = CliRunner().invoke(cli, ["detect", str(tmp_path / "x.bin"), str(tmp_path / "x.json"),
                                      "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "refused" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists()


def test_report_command_writes_summary_pictures_and_report(tmp_path):
    import json

    spec = SyntheticSpec(n_channels=16, duration_s=6.0, n_units=8, seed=2)
    bin_path, json_path, gt = write_recording(tmp_path, "r", spec)
    out = tmp_path / "rep"
    result = CliRunner().invoke(cli, ["report", str(bin_path), str(json_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.json", "spikes.parquet", "report.html", "activity_map.png", "waveforms.png", "raster.png",
         "population_rate.png", "isi_histogram.png"])
    summary = json.loads((out / "summary.json").read_text())
    planted = int(gt.spikes_per_channel().sum())
    assert abs(summary["total_spikes"] - planted) <= 0.05 * planted
    assert summary["parameters"]["detection"]["threshold_mad"] == 5.0
    assert (out / "activity_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Parameters used" in (out / "report.html").read_text()
    import hashlib

    page = (out / "report.html").read_text()  # the receipt: the inputs' checksums, the code, the parameters' hashes
    assert "Reproducibility receipt" in page and hashlib.sha256(bin_path.read_bytes()).hexdigest() in page
    # results are never overwritten
    again = CliRunner().invoke(cli, ["report", str(bin_path), str(json_path), "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output


def test_detect_leaves_no_partial_table_when_the_file_fails_midway(tmp_path, monkeypatch):
    import neurocyte_shared.science.detection.windows as local_detect

    spec = SyntheticSpec(n_channels=16, duration_s=6.0, n_units=8, seed=5)
    bin_path, json_path, _ = write_recording(tmp_path, "r", spec)
    real = local_detect.detect_spikes

    def then_truncate(*args, **kwargs):  # the upload is cut short while we read it
        table = real(*args, **kwargs)
        with open(bin_path, "r+b") as f:
            f.truncate(16 * 2 * 20_000)
        return table

    monkeypatch.setattr(local_detect, "detect_spikes", then_truncate)
    out = tmp_path / "spikes.parquet"
    result = CliRunner().invoke(cli, ["detect", str(bin_path), str(json_path), "--out", str(out), "--window-s", "1"])
    assert result.exit_code == 1, result.output
    assert "ended early" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bin", "r.json"]


def test_detect_refuses_an_output_it_cannot_write(tmp_path):
    spec = SyntheticSpec(n_channels=4, duration_s=1.0, n_units=2, seed=1)
    bin_path, json_path, _ = write_recording(tmp_path, "r", spec)
    (tmp_path / "spikes.csv.partial").mkdir()  # where the table is written until it is whole
    result = CliRunner().invoke(cli, ["detect", str(bin_path), str(json_path), "--out", str(tmp_path / "spikes.csv")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "cannot write there" in said and "Traceback" not in said
    assert not (tmp_path / "spikes.csv").exists()


def test_detect_checks_the_output_name_before_working(tmp_path):
    spec = SyntheticSpec(n_channels=4, duration_s=1.0, n_units=2, seed=1)
    bin_path, json_path, _ = write_recording(tmp_path, "r", spec)
    for out, says in ((tmp_path / "spikes.txt", ".csv or .parquet"), (tmp_path / "no" / "s.csv", "does not exist")):
        result = CliRunner().invoke(cli, ["detect", str(bin_path), str(json_path), "--out", str(out)])
        said = " ".join(result.output.split())  # the console wraps long lines
        assert result.exit_code == 1 and says in said and "Traceback" not in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bin", "r.json"]


_FAULTS = """
import resource, sys
import numpy as np
from neurocyte_shared.science.detection.windows import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def window():  # what a window does: a few 5 MB arrays alive at once, written, then freed
    arrays = [np.empty(1_310_720, np.float32) for _ in range(3)]
    for a in arrays:
        a.fill(1.0)
window()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    window()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc; other C libraries differ")
def test_keep_freed_memory_stops_each_window_faulting_its_arrays_in_again():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        kept, n = out.stdout.split()
        return kept, int(n)

    assert faults("default")[1] > 20 * 1_000  # of 3 x 1,280 pages a window, most faulted in anew each time
    kept, n = faults("keep")
    assert kept == "True" and n < 200  # the freed block is reused as it is
