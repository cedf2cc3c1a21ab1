"""Upload throughput through the web page against `neurocyte submit`, same file, same run
(a benchmark, not a test). Needs the local stack (`neurocyte up`) and Debian's chromium.

    .venv/bin/python benchmarks/web_upload.py [--channels 1024 --seconds 64]

Generates a recording once (1024 channels x 64 s x 20 kHz int16: 2.6 GB, in
/tmp/neurocyte-bench), signs in through the page with the link from the local inbox, drops the
recording on the page and times it until the page has written the manifest; waits for the
pipeline to finish with it; then times `neurocyte submit` of the same files (recognised as a
duplicate, so only its upload costs). Prints both and their ratio; writes
benchmarks/results/web-upload-<time>.json."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from neurocyte_cli import local as L

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"


def recording(channels: int, seconds: float) -> tuple[Path, Path]:
    folder = Path("/tmp/neurocyte-bench")
    folder.mkdir(exist_ok=True)
    bin_path, json_path = folder / f"web{channels}ch_{seconds:g}s.bin", folder / f"web{channels}ch_{seconds:g}s.json"
    if not bin_path.exists():
        rng = np.random.default_rng(0)
        with open(bin_path, "wb") as f:
            for _ in range(int(seconds)):  # noise, one second at a time (bounded memory)
                f.write((rng.standard_normal((20_000, channels)) * 20).astype(np.int16).tobytes())
        side = {"sampling_rate_hz": 20000.0, "n_channels": channels, "dtype": "int16", "gain_uv": 1.0,
                "offset_uv": 0.0, "layout": "samples_by_channels",
                "channel_locations_um": [[(i % 32) * 17.5, (i // 32) * 17.5] for i in range(channels)]}
        json_path.write_text(json.dumps(side))
    return bin_path, json_path


def link(local: L.Local, email: str, after: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mails = L.mail_to(local, email)
        if len(mails) > after:
            return re.search(r"(http://[^\s\"'\\]+/signin/[A-Za-z0-9_.=-]+)", json.dumps(mails[-1])).group(1)
        time.sleep(0.3)
    raise SystemExit("no sign-in email arrived")


def through_the_page(local: L.Local, files: tuple[Path, Path]) -> tuple[float, str]:
    from playwright.sync_api import sync_playwright

    web, email = L.web_url(), f"bench-{uuid.uuid4().hex[:6]}@lab.org"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        page = browser.new_page()
        page.goto(f"{web}/signin")
        page.fill("#email", email)
        before = len(L.mail_to(local, email))
        page.click("text=Email me a sign-in link")
        page.wait_for_selector("text=Check your email")
        page.goto(link(local, email, before))
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{web}/recordings")
        page.set_input_files("input.uppy-Dashboard-input", [str(f) for f in files])
        with page.expect_response(lambda r: r.url.endswith("/manifest") and r.ok, timeout=3_600_000) as done:
            started = time.perf_counter()
            page.click(".uppy-StatusBar-actionBtn--upload")
        seconds = time.perf_counter() - started
        rid = done.value.json()["recording_id"]
        browser.close()
    return seconds, rid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=64.0)
    args = ap.parse_args()
    local = L.Local.from_env()
    if not L.localstack_healthy(local):
        raise SystemExit("start the local stack first: .venv/bin/neurocyte up")
    files = recording(args.channels, args.seconds)
    size = sum(f.stat().st_size for f in files)
    print(f"recording: {args.channels} ch x {args.seconds:g} s, {size / 1e9:.2f} GB")
    page_s, rid = through_the_page(local, files)
    print(f"  through the page: {page_s:.1f} s, {size / 1e6 / page_s:.0f} MB/s; waiting for its result ...")
    deadline = time.monotonic() + 1800
    while not any(rid in json.dumps(m) for m in L.inbox(local)) and time.monotonic() < deadline:
        time.sleep(2)  # the pipeline's work must not overlap the second upload
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "neurocyte"), "submit", *map(str, files), "--email",
                    "bench-cli@lab.org"], check=True, capture_output=True)
    cli_s = time.perf_counter() - started
    ratio = (size / page_s) / (size / cli_s)
    print(f"  neurocyte submit: {cli_s:.1f} s, {size / 1e6 / cli_s:.0f} MB/s (the whole command, hashing included)")
    print(f"{'path':<22}{'seconds':>9}{'MB/s':>8}")
    print(f"{'web page (Uppy)':<22}{page_s:>9.1f}{size / 1e6 / page_s:>8.0f}")
    print(f"{'neurocyte submit':<22}{cli_s:>9.1f}{size / 1e6 / cli_s:>8.0f}")
    print(f"page / submit throughput: {ratio:.2f}x (goal: at least 0.7x)")
    out = HERE / "results" / f"web-upload-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"bytes": size, "channels": args.channels, "seconds": args.seconds,
                               "page_s": page_s, "submit_s": cli_s, "ratio": ratio}, indent=1))
    print(f"-> {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
