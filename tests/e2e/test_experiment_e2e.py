"""An experiment end to end on a real LocalStack: a two-well MaxTwo file uploaded with a plate
map gives two recording emails and one experiment email whose link opens the experiment's
report; a plate map that cannot be used is refused with its reason."""

from __future__ import annotations

import json
import uuid

import pytest

from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from ..samples import convert
from .conftest import mail_body, wait_for

pytestmark = pytest.mark.e2e

HEADER = "file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate,baseline_file"


def _upload_plate(stack, tmp_path, rows: list[str], seconds: float, seed: int, who: str) -> tuple[str, str]:
    """A two-well MaxTwo file and a plate map with these rows, uploaded as an experiment:
    (the uploader's address, the experiment's name)."""
    bin_path, json_path, _ = write_recording(tmp_path, "src", SyntheticSpec(n_channels=16, duration_s=seconds,
                                                                            n_units=8, seed=seed))
    files = convert(bin_path, json_path, "maxwell_wells", tmp_path / "plate", name="plate")
    email, name = f"{who}-{uuid.uuid4().hex[:6]}@example.org", f"{who}-{uuid.uuid4().hex[:6]}"
    stack.upload(files, email=email, tenant="exp", rid=name,
                 experiment={"name": name, "plate_map": "\n".join([HEADER, *rows]) + "\n", "file": "plate.raw.h5"})
    return email, name


def test_a_two_well_plate_gives_two_recording_emails_and_one_experiment_email(stack, tmp_path):
    import requests

    email, name = _upload_plate(stack, tmp_path, ["plate.raw.h5,well000,A1,control,,,,WT,14,1,",
                                                  "plate.raw.h5,well001,A2,drug,compound X,1,uM,WT,14,1,"],
                                8.0, 21, "plate")

    mails = wait_for(lambda: (m := stack.mail_to(email)) and len(m) >= 3 and m, 300, "2 recording emails and 1 "
                     "experiment email")
    # (LocalStack's mailbox keeps the message, not the subject SNS was given)
    experiment = [mail_body(m) for m in mails if f"your experiment {name} has been analysed" in mail_body(m)]
    assert len(experiment) == 1, [mail_body(m)[:80] for m in mails]
    body = experiment[0]
    assert sum("Total spikes:" in mail_body(m) for m in mails) == 2  # and the two wells' own emails
    assert "2 recordings of 2 wells, 2 condition(s); compared with 'control'." in body
    url = next(w for w in body.split() if w.startswith("http") and "report.html" in w)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and f"Experiment {name}" in page.text and "Reproducibility receipt" in page.text

    (result_key,) = [k for k in stack.keys(f"experiments/tenant=exp/name={name}/results/")
                     if k.endswith("experiment.json")]
    result = json.loads(stack.s3.get_object(Bucket=stack.data, Key=result_key)["Body"].read())
    assert result["recordings"] == 2 and result["conditions"] == ["control", "drug"]
    folder = result_key.rsplit("/", 1)[0] + "/"
    names = {k[len(folder):] for k in stack.keys(folder)}
    assert {"report.html", "tidy.csv", "plate.png", "conditions.png", f"tidy/experiment={name}/data.parquet"} <= names
    assert sum(n.startswith("nwb/") and n.endswith(".nwb") for n in names) == 2  # one per recording, for DANDI
    tidy = stack.s3.get_object(Bucket=stack.data, Key=folder + "tidy.csv")["Body"].read().decode().splitlines()
    assert len(tidy) == 3 and tidy[0].startswith("file,stream,well,condition")
    # nothing more comes: the experiment is emailed once (the notifier's queue drained first)
    wait_for(lambda: stack.queue_idle("Notifier"), 60, "the notifier's queue to drain")
    assert len(stack.mail_to(email)) == 3


def test_a_plate_map_that_cannot_be_used_is_refused_with_its_reason(stack, tmp_path):
    email, _ = _upload_plate(stack, tmp_path, ["plate.raw.h5,well000,A1,drug,X,10,,,,,",
                                               "plate.raw.h5,well007,A2,control,,,,,,,"], 4.0, 22, "badplate")
    (mail,) = wait_for(lambda: stack.mail_to(email), 120, "the refusal email")
    body = mail_body(mail)
    assert "was not processed, for this reason" in body
    assert "line 2: concentration 10 has no concentration_unit" in body
    assert "line 3: plate.raw.h5 has no well 'well007'" in body
