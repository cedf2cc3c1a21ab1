"""`neurocyte experiment report` on this machine: a synthetic dose-response plate in, the
experiment's report out (no AWS); a plate map that cannot be used is refused with its reasons."""

import json

from click.testing import CliRunner

from neurocyte_cli.main import cli
from neurocyte_shared.science.synthetic import write_plate


def test_a_plate_map_and_its_recordings_give_the_experiment_report(tmp_path):
    plate = write_plate(tmp_path / "plate", replicates=1, duration_s=6.0, n_channels=8)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["experiment", "report", str(plate), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"experiment.json", "tidy.csv", "report.html", "plate.png", "conditions.png", "plate_map.csv",
            "tidy/experiment=plate/data.parquet"} <= names
    assert sum(n.startswith("recordings/") and n.endswith("/summary.json") for n in names) == 12
    assert sum(n.startswith("nwb/") and n.endswith(".nwb") for n in names) == 12
    result_doc = json.loads((out / "experiment.json").read_text())
    (compound,) = result_doc["compounds"]
    rate = next(d for d in compound["dose_response"] if d["metric"] == "mean_firing_rate_hz")
    assert rate["kind"] == "IC50" and rate["n"] == 6
    assert len(result_doc["receipt"]["inputs_sha256"]) == 24  # each recording's .bin and .json
    assert "IC50" in result.output
    again = CliRunner().invoke(cli, ["experiment", "report", str(plate), "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output


def test_a_plate_map_that_cannot_be_used_is_refused_with_every_reason(tmp_path):
    bad = tmp_path / "map.csv"
    bad.write_text("file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate,"
                   "baseline_file\nmissing.bin,,A1,control,X,3,,,,,\n")
    result = CliRunner().invoke(cli, ["experiment", "report", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "line 2: concentration 3 has no concentration_unit" in result.output
    assert not (tmp_path / "o").exists()
