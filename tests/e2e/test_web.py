"""The web front-end in a real browser (Debian's chromium, driven by Playwright) against the
local stack: sign in with the emailed link, drop a recording, watch it reach "emailed", open
its report; a second user sees none of it. Then the security checks, over plain HTTP."""

from __future__ import annotations

import base64
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

from neurocyte_cli import local as L
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from .conftest import wait_for

CHROMIUM = Path("/usr/bin/chromium")
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
pytestmark = pytest.mark.e2e


def _link(stack, email: str, after: int = 0, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mails = stack.mail_to(email)
        if len(mails) > after:
            body = mails[-1].get("Body", {}).get("text_part") or str(mails[-1])
            return re.search(r"(http://\S+/signin/[A-Za-z0-9_.=-]+)", body).group(1)
        time.sleep(0.3)
    raise AssertionError(f"no sign-in email for {email} within {timeout_s} s")


def _session(stack, email: str) -> tuple[requests.Session, str]:
    """A signed-in HTTP client and its CSRF token."""
    web, s = L.web_url(), requests.Session()
    before = len(stack.mail_to(email))
    assert s.post(f"{web}/signin", data={"email": email}).ok
    link = _link(stack, email, before)
    token = link.rsplit("/", 1)[1]
    r = s.post(f"{web}/signin/complete", data={"token": token}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/recordings"
    page = s.get(f"{web}/recordings").text
    return s, re.search(r'data-csrf="([0-9a-f]+)"', page).group(1)


def upload_through_api(session: requests.Session, csrf: str, files: dict[str, bytes], name: str) -> str:
    """Upload through the page's API, as Uppy does: presigned parts straight to S3, the manifest
    last. Returns the recording id."""
    web, headers = L.web_url(), {"x-csrf-token": csrf}
    started = session.post(f"{web}/api/uploads", headers=headers,
                           json={"files": [{"name": n, "size": len(b)} for n, b in files.items()]}).json()
    rid = started["recording_id"]
    for filename, body in files.items():
        created = session.post(f"{web}/api/uploads/{rid}/multipart", json={"filename": filename},
                               headers=headers).json()
        where = {"key": created["key"], "uploadId": created["uploadId"]}
        signed = session.get(f"{web}/api/uploads/{rid}/multipart/sign", params={**where, "partNumber": 1,
                                                                                "size": len(body)}).json()
        put = requests.put(signed["url"], data=body)
        assert put.ok, put.text
        done = session.post(f"{web}/api/uploads/{rid}/multipart/complete", params=where, headers=headers,
                            json={"parts": [{"PartNumber": 1, "ETag": put.headers["ETag"]}]})
        assert done.ok
    assert session.post(f"{web}/api/uploads/{rid}/manifest", json={"name": name, "files": list(files)},
                        headers=headers).ok
    return rid


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("the browser test needs Debian's chromium: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _sign_in(stack, page, email: str) -> None:
    """As a user does: ask for a link, open it from the email, confirm."""
    web = L.web_url()
    page.goto(f"{web}/")
    page.fill("#email", email)
    page.click("text=Email me a sign-in link")
    page.wait_for_selector("text=Check your email")
    page.goto(_link(stack, email))
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{web}/recordings")


def _drop(page, files: dict[str, bytes]) -> None:
    """Drag files onto the page's drop zone, as a user would from their file manager."""
    payload = {name: base64.b64encode(data).decode() for name, data in files.items()}
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const [name, b64] of Object.entries(files)) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, { type: "application/octet-stream" }));
        }
        const zone = document.querySelector(".uppy-Dashboard-inner");
        for (const type of ["dragenter", "dragover", "drop"])
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", payload)


def test_a_lab_signs_in_drops_a_recording_and_reads_its_report(stack, browser, tmp_path):
    IMAGES.mkdir(parents=True, exist_ok=True)
    web, alice = L.web_url(), f"alice-{uuid.uuid4().hex[:6]}@lab.org"
    bin_path, json_path, _ = write_recording(tmp_path, "slice7", SyntheticSpec(n_channels=16, duration_s=12.0,
                                                                               n_units=10, seed=7))
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.goto(f"{web}/")
    page.fill("#email", alice)
    page.screenshot(path=str(IMAGES / "web-signin.png"))
    page.click("text=Email me a sign-in link")
    page.wait_for_selector("text=Check your email")
    page.goto(_link(stack, alice))
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{web}/recordings")

    # A .bin without its sidecar is refused before a byte is sent, in plain words.
    _drop(page, {"slice7.bin": bin_path.read_bytes()})
    page.wait_for_selector("#check:has-text('needs its companion')")
    _drop(page, {"slice7.json": json_path.read_bytes()})
    page.locator("#check").wait_for(state="hidden")
    page.click(".uppy-StatusBar-actionBtn--upload")
    page.screenshot(path=str(IMAGES / "web-upload.png"))
    row = page.locator("#recordings tbody tr", has_text="slice7")
    row.locator("td.stage", has_text="emailed").wait_for(timeout=240_000)
    page.screenshot(path=str(IMAGES / "web-recordings.png"))
    assert any("slice7" in str(m) for m in stack.mail_to(alice)), "the result email"

    row.locator("a").click()
    page.wait_for_selector("text=Open the report")
    spikes = int(page.locator("dt:has-text('Spikes') + dd").inner_text().replace(",", ""))
    assert spikes > 100
    page.screenshot(path=str(IMAGES / "web-report.png"), full_page=True)
    recording_url = page.url
    page.click("text=Open the report")
    page.wait_for_load_state()
    assert "spikes" in page.content().lower()

    # Rerun with a higher threshold: a second version beside the first, with fewer spikes.
    page.goto(recording_url)
    page.fill("[name='detection.threshold_mad']", "6")
    page.click("#rerun button[type=submit]")
    page.wait_for_selector("text=Rerun requested")
    column = page.locator("#versions thead th", has_text="threshold_mad 6")
    column.wait_for(timeout=240_000)  # the page refreshes itself while the rerun is under way
    page.screenshot(path=str(IMAGES / "web-versions.png"), full_page=True)
    cells = page.locator("#versions tbody tr").first.locator("td").all_inner_texts()
    first, second = (int(c.replace(",", "")) for c in cells)
    assert first == spikes and 0 < second < first
    assert any("threshold_mad 6" in str(m) or "has been analysed" in str(m) for m in stack.mail_to(alice))
    bad = page.request.post(f"{recording_url}/rerun", form={"detection.threshold_mad": "-1"})
    assert bad.status == 403  # no CSRF token

    # Another lab's user sees none of it.
    bob = browser.new_context().new_page()
    _sign_in(stack, bob, f"bob-{uuid.uuid4().hex[:6]}@other.org")
    assert bob.locator("#recordings tbody", has_text="slice7").count() == 0
    assert bob.goto(recording_url).status == 404
    assert bob.goto(recording_url + "/files/summary.json").status == 404
    assert bob.request.post(recording_url + "/rerun", form={"detection.threshold_mad": "7"}).status == 404


def test_links_sessions_and_uploads_are_guarded(stack):
    web = L.web_url()
    alice, alice_csrf = _session(stack, f"alice2-{uuid.uuid4().hex[:6]}@lab.org")
    bob, bob_csrf = _session(stack, f"bob2-{uuid.uuid4().hex[:6]}@other.org")

    # A link works once; a forged or altered token is refused.
    email = f"carol-{uuid.uuid4().hex[:6]}@lab.org"
    requests.post(f"{web}/signin", data={"email": email})
    token = _link(stack, email).rsplit("/", 1)[1]
    assert requests.post(f"{web}/signin/complete", data={"token": token}, allow_redirects=False).status_code == 303
    again = requests.post(f"{web}/signin/complete", data={"token": token}, allow_redirects=False)
    assert again.status_code == 400 and "already been used" in again.text
    body, mac = token.split(".")
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "==").replace(b"carol", b"mallo")).decode()
    assert requests.post(f"{web}/signin/complete", data={"token": f"{forged.rstrip('=')}.{mac}"}).status_code == 400

    # Sign-in emails are rate-limited per address.
    spam = f"spam-{uuid.uuid4().hex[:6]}@lab.org"
    codes = [requests.post(f"{web}/signin", data={"email": spam}).status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429

    # State changes need the CSRF token; a page allows no inline script.
    started = alice.post(f"{web}/api/uploads", json={"files": [{"name": "a.nwb", "size": 10}]})
    assert started.status_code == 403
    headers = {"x-csrf-token": alice_csrf}
    started = alice.post(f"{web}/api/uploads", json={"files": [{"name": "a.nwb", "size": 10}]}, headers=headers)
    assert started.ok
    csp = alice.get(f"{web}/recordings").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]

    # Bob cannot get upload URLs for Alice's prefix, nor see her upload.
    rid, prefix = started.json()["recording_id"], started.json()["prefix"]
    bob_headers = {"x-csrf-token": bob_csrf}
    created = bob.post(f"{web}/api/uploads/{rid}/multipart", json={"filename": "a.nwb"}, headers=bob_headers)
    assert not created.json()["key"].startswith(prefix)  # the same id names Bob's own prefix, never Alice's
    signed = bob.get(f"{web}/api/uploads/{rid}/multipart/sign",
                     params={"key": prefix + "a.nwb", "uploadId": "x", "partNumber": 1, "size": 10})
    assert signed.status_code == 403
    too_big = alice.get(f"{web}/api/uploads/{rid}/multipart/sign",
                        params={"key": prefix + "a.nwb", "uploadId": "x", "partNumber": 1, "size": 1 << 30})
    assert too_big.status_code == 400
    assert bob.get(f"{web}/recordings/{rid}").status_code == 404

    # Signing out revokes the session.
    assert alice.post(f"{web}/signout", data={"csrf": alice_csrf}, allow_redirects=False).status_code == 303
    assert alice.get(f"{web}/api/recordings").status_code == 401


def test_an_invited_colleague_sees_the_labs_recordings_and_nobody_else_does(stack):
    from .conftest import wait_for

    web, tag = L.web_url(), uuid.uuid4().hex[:6]
    alice, csrf = _session(stack, f"alice3-{tag}@lab.org")
    carol = f"carol3-{tag}@lab.org"
    invited = alice.post(f"{web}/lab/invite", data={"csrf": csrf, "email": carol}, allow_redirects=False)
    assert invited.status_code == 303
    rid = upload_through_api(alice, csrf, {"tiny.bin": bytes(64), "tiny.json": b"{}"}, "tiny")
    colleague, _ = _session(stack, carol)
    assert rid in [r["id"] for r in colleague.get(f"{web}/api/recordings").json()["recordings"]]
    outsider, _ = _session(stack, f"dave-{tag}@elsewhere.org")
    assert rid not in [r["id"] for r in outsider.get(f"{web}/api/recordings").json()["recordings"]]
    # The sidecar is not a recording's: the refusal shows in the lab's list with its reason.
    row = wait_for(lambda: [r for r in colleague.get(f"{web}/api/recordings").json()["recordings"]
                            if r["id"] == rid and r["failed"]], 90, "the refusal in the list")
    assert row[0]["stage"].startswith("rejected") and "tiny.json" in row[0]["detail"]


def test_a_plate_goes_up_with_its_plate_map_and_its_experiment_is_emailed(stack, browser, tmp_path):
    """Two wells' recordings dropped with an experiment name and a plate map: a map that cannot
    be used is refused on the page before a byte is sent; a good one travels in each manifest, and
    once both recordings are analysed the experiment's email comes."""
    ana = f"ana-{uuid.uuid4().hex[:6]}@lab.org"
    files = {}
    for well, seed in (("A1", 31), ("A2", 32)):
        b, j, _ = write_recording(tmp_path, well, SyntheticSpec(n_channels=16, duration_s=6.0, n_units=8, seed=seed))
        files[b.name], files[j.name] = b.read_bytes(), j.read_bytes()
    header = "file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate,baseline_file"
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    _sign_in(stack, page, ana)

    page.click("#experiment summary")
    page.fill("#experiment-name", "plate9")
    page.set_input_files("#plate-map", files=[{"name": "plate.csv", "mimeType": "text/csv", "buffer": (
        f"{header}\nA1.bin,,A1,control,,,,,,,\nA2.bin,,A2,drug,X,5,,,,,\n").encode()}])
    _drop(page, files)
    page.wait_for_selector("#check:has-text('concentration 5 has no concentration_unit')")  # said before uploading
    assert not _upload_keys(stack, ana)  # nothing went up

    page.set_input_files("#plate-map", files=[{"name": "plate.csv", "mimeType": "text/csv", "buffer": (
        f"{header}\nA1.bin,,A1,control,,,,,,,\nA2.bin,,A2,drug,X,5,uM,,,,\n").encode()}])
    page.locator("#check").wait_for(state="hidden")
    page.screenshot(path=str(IMAGES / "web-experiment.png"), full_page=True)
    page.click(".uppy-StatusBar-actionBtn--upload")
    mails = wait_for(lambda: [m for m in stack.mail_to(ana) if "your experiment plate9 has been analysed" in str(m)],
                     300, "the experiment's email")
    assert "2 recordings of 2 wells" in str(mails[0])


def _upload_keys(stack, email: str) -> list[str]:
    from neurocyte_shared.storage import layout

    prefix = f"uploads/{layout.tenant_for_email(email)}/"
    return [o["Key"] for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.uploads, Prefix=prefix)
            for o in page.get("Contents", [])]


def test_the_page_says_when_a_recording_is_over_the_labs_upload_limit(stack, browser, tmp_path):
    """A lab's own limit (usage/tenant=<lab>/settings.json) is what the page checks, per recording
    and in plain words, before a byte is sent; the site refuses it too if the page is bypassed."""
    import json

    from neurocyte_shared.storage import layout

    web, email = L.web_url(), f"carla-{uuid.uuid4().hex[:6]}@lab.org"
    lab = layout.tenant_for_email(email)
    stack.s3.put_object(Bucket=stack.data, Key=layout.tenant_settings_key(lab),
                        Body=json.dumps({"max_upload_gb": 0.0002}))  # 200 kB
    bin_path, json_path, _ = write_recording(tmp_path, "big", SyntheticSpec(n_channels=16, duration_s=4.0,
                                                                            n_units=4, seed=9))
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    _sign_in(stack, page, email)
    _drop(page, {"big.bin": bin_path.read_bytes(), "big.json": json_path.read_bytes()})
    page.wait_for_selector("#check:has-text(\"over your lab's limit of 200 kB per upload\")")
    page.screenshot(path=str(IMAGES / "web-limit.png"))
    assert "big: 2.6 MB" in page.locator("#check").inner_text()  # said per recording, both files together

    s, csrf = _session(stack, email)
    r = s.post(f"{web}/api/uploads", json={"files": [{"name": "big.bin", "size": bin_path.stat().st_size},
                                                      {"name": "big.json", "size": json_path.stat().st_size}]},
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and "over your lab's limit" in r.json()["error"]
