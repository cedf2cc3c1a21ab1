"""Running the local stack: up, down, and the demo (a synthetic recording in, an email out)."""

from __future__ import annotations

import click

from neurocyte_cli.commands.operate import print_mail
from neurocyte_cli.commands.submit import submit_files, wait_for_email
from neurocyte_cli.ui import L, _fail, console

# --------------------------------------------------------------------------- local stack


@click.command()
@click.option("--detectors", default=2, show_default=True, help="detector worker processes")
def up(detectors: int) -> None:
    """Start LocalStack, provision the stack and start the five services."""
    local = L.Local.from_env()
    try:
        L.start_localstack(local, say=console.print)
        outputs = L.deploy_stack(local, say=console.print)
        L.start_services(local, outputs, detectors=detectors, say=console.print)
    except L.LocalStackError as exc:
        _fail(str(exc))
    console.print(f"[green]Up.[/green] Endpoint {local.endpoint}, stack {local.stack}. Stop with `neurocyte down`.")


@click.command()
def down() -> None:
    """Stop the services and LocalStack."""
    L.stop_all(L.Local.from_env(), say=console.print)


# --------------------------------------------------------------------------- demo


@click.command()
@click.option("--email", default="you@example.org", show_default=True)
@click.option("--channels", default=64, show_default=True)
@click.option("--duration", "duration_s", default=60.0, show_default=True, help="seconds")
@click.option("--keep-running", is_flag=True, help="leave the stack up afterwards")
@click.option("--plate", is_flag=True, help="an experiment instead: a synthetic dose-response plate (6 wells, each "
              "recorded before and after a compound of known IC50) and its plate map; prints the experiment's email")
def demo(email: str, channels: int, duration_s: float, keep_running: bool, plate: bool) -> None:
    """The whole path: start the stack, upload a synthetic recording, print the email, stop."""
    from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

    local = L.Local.from_env()
    was_up = L.localstack_healthy(local) and any(L.running(local).values())
    ctx = click.get_current_context()
    try:
        ctx.invoke(up)
        if plate:
            _plate_demo(local, email)
            return
        folder = local.home / "demo"
        spec = SyntheticSpec(n_channels=channels, duration_s=duration_s, network_burst_every_s=6.0)
        console.print(f"Generating a synthetic recording: {channels} channels, {duration_s:g} s, "
                      f"{spec.sampling_rate_hz / 1000:g} kHz, {spec.n_units} units ...")
        bin_path, json_path, gt = write_recording(folder, "demo", spec)
        console.print(f"  planted {sum(s.size for s in gt.spike_samples):,} spikes -> {bin_path}")
        # reprocess: the demo recording is the same every time; show the whole path every time.
        rid = submit_files([bin_path, json_path], email=email, name="demo", reprocess=True)
        message = wait_for_email(rid, email, timeout=900)
        console.print()
        print_mail(message)
        console.print(f"Web: {L.web_url()} (sign in with your address; the local inbox: `neurocyte inbox`)")
    finally:
        if not keep_running and not was_up:
            ctx.invoke(down)



def _plate_demo(local: L.Local, email: str) -> None:
    """Twelve recordings (six wells at baseline and after six doses of a compound whose IC50 is
    1 uM) uploaded as one experiment; waits for the experiment's email and prints it."""
    import json
    import time

    from neurocyte_shared.science.experiments.platemap import read
    from neurocyte_shared.science.synthetic import write_plate
    from neurocyte_shared.storage.documents import ManifestExperiment

    folder = local.home / "demo-plate"
    console.print("Generating a synthetic plate: 6 wells x (baseline, dosed), 16 channels, 10 s each; the compound's "
                  "true IC50 is 1 uM, Hill slope 1.5 ...")
    map_path = write_plate(folder, replicates=1, duration_s=10.0)
    plate = read(map_path)
    name = f"demo-plate-{time.strftime('%Y%m%dT%H%M%S')}"
    text = map_path.read_text()
    for row in plate.rows:
        data = folder / row.file
        submit_files([data, data.with_suffix(".json")], email=email, reprocess=True,
                     experiment=ManifestExperiment(name=name, plate_map=text, file=row.file))
    started = time.monotonic()
    with console.status(f"waiting for the experiment's email ({len(plate.rows)} recordings) ..."):
        while time.monotonic() - started < 900:
            mine = [m for m in L.mail_to(local, email) if f"experiment {name}" in json.dumps(m)]
            if mine:
                break
            time.sleep(1.0)
        else:
            _fail("no experiment email within 15 minutes; `neurocyte status` shows where each recording is")
    console.print(f"Experiment email arrived {time.monotonic() - started:.1f} s after the last upload.")
    print_mail(mine[-1])
