"""`neurocyte experiment report`: a plate's recordings, described by a plate map, analysed
together on this machine (no AWS): each recording's own report, then the experiment's."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from neurocyte_cli.commands.offline import _detection_options, with_companions
from neurocyte_cli.ui import _fail, console, out


@click.group()
def experiment() -> None:
    """Experiments: several recordings (wells, doses, days in vitro) described by a plate map."""


@experiment.command("report")
@click.argument("plate_map", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory for experiment.json, the tidy table, the pictures, report.html and each recording's "
                   "own report under recordings/ and NWB file under nwb/ (created; must not exist)")
@click.option("--name", default=None, help="the experiment's name (default: the plate map's file name)")
@click.option("--control", default=None, help="the condition the others are compared with (default: one named "
                                              "control, vehicle, baseline, untreated, WT or DMSO, else the first)")
@click.option("--plate-metric", default="mean_firing_rate_hz", show_default=True,
              help="the metric the plate view colours the wells by")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 256), help="cores to use")
@_detection_options
def report(plate_map: Path, out_dir: Path, name: str | None, control: str | None, plate_metric: str, jobs: int,
           **params) -> None:
    """Analyse every recording a plate map names and write the experiment's report: tidy
    table, comparisons of conditions, dose-response fits, days-in-vitro trajectories, the
    plate, and a reproducibility receipt. See docs/experiments.md."""
    from neurocyte_cli.commands.offline import _FolderSink, analyse_recording, sha256_of
    from neurocyte_shared.science import results
    from neurocyte_shared.science.experiments import analysis, nwb, platemap
    from neurocyte_shared.science.experiments import report as experiment_report
    from neurocyte_shared.science.experiments.table import HEADLINE
    from neurocyte_shared.science.metrics import MetricsParams

    if out_dir.exists():
        _fail(f"{out_dir} exists; choose a new directory (results are never overwritten)")
    try:
        plate = platemap.read(plate_map)
        options = analysis.ExperimentParams(control=control, plate_metric=plate_metric)
        analysis.choose_control(list(dict.fromkeys(r.condition for r in plate.rows)), control)
    except platemap.PlateMapError as exc:
        _fail(f"{plate_map.name}: {exc}")
    except ValueError as exc:
        _fail(str(exc))
    if plate_metric not in HEADLINE:
        _fail(f"--plate-metric must be one of {', '.join(HEADLINE)}")
    folder = plate_map.resolve().parent
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        summaries, inputs, detection = {}, {}, None
        keys = list(dict.fromkeys(r.key for r in plate.rows))
        for i, (file, stream) in enumerate(keys, 1):
            files = with_companions((folder / file,))
            label = file + (f" {stream}" if stream else "")
            console.print(f"[{i}/{len(keys)}] {label}")
            summary, merged, waveforms, p = analyse_recording(files, params, stream, jobs, name=Path(file).stem)
            detection = p
            summaries[(file, stream)] = summary
            sub = tmp / "recordings" / (Path(file).name.split(".")[0] + (f"-{stream}" if stream else ""))
            sub.mkdir(parents=True, exist_ok=True)
            digests = {f.relative_to(folder).as_posix(): inputs.get(f.relative_to(folder).as_posix()) or sha256_of(f)
                       for f in files}
            inputs.update(digests)
            results.publish(summary, merged, _FolderSink(sub), waveforms, {Path(k).name: v for k, v in digests.items()})
            (tmp / "nwb").mkdir(exist_ok=True)
            row = next(r for r in plate.rows if r.key == (file, stream))
            nwb.write(tmp / "nwb" / f"{sub.name}.nwb", identifier=sub.name, description=f"well {row.well}: {label}",
                      session_start=datetime.fromtimestamp(files[0].stat().st_mtime, UTC),
                      experiment=name or plate_map.stem, sampling_rate_hz=summary.sampling_rate_hz,
                      channel_ids=tuple(c.channel_id for c in summary.channels),
                      channel_locations_um=[(c.x_um, c.y_um) for c in summary.channels],
                      sample_index=merged.sample_index, channel_index=merged.channel_index, row=row)
        receipt = _receipt(inputs, detection, MetricsParams(), options)
        result, rows = analysis.analyse(name or plate_map.stem, plate, summaries, options, receipt)
        for rel, data in experiment_report.files(result, rows).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / "plate_map.csv").write_text(plate.to_csv())
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for line in result["headline"]:
        out.print(f"- {line}")
    out.print(f"report: {out_dir / 'report.html'}")


def _receipt(inputs: dict[str, str], detection, metrics, options) -> dict:
    """What a reader needs to reproduce the report: the inputs' checksums, the code's version,
    every parameter with its hash, and when. (The time is in the receipt only: the tables of
    two runs with the same inputs and parameters are byte for byte the same.)"""
    from importlib.metadata import version

    def digest(model) -> str:
        return hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:16]

    return {
        "inputs_sha256": dict(sorted(inputs.items())),
        "code_version": f"neurocyte {version('neurocyte-shared')}",
        "detection_parameters": detection.model_dump() if detection else None,
        "detection_parameters_hash": digest(detection) if detection else None,
        "metrics_parameters": metrics.model_dump(),
        "metrics_parameters_hash": digest(metrics),
        "experiment_parameters": json.loads(options.model_dump_json()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
