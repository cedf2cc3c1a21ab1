"""The words of the emails: plain text, headline figures first."""

from __future__ import annotations

from neurocyte_shared.messaging.events import (
    DuplicateUploadSkipped,
    ExperimentSummarized,
    ProcessingFailed,
    RecordingRejected,
    RecordingSummarized,
)


def summary_email(e: RecordingSummarized) -> tuple[str, str]:
    subject = (f"Neurocyte: {e.recording_name}: {e.total_spikes:,} spikes, "
               f"{e.active_electrodes}/{e.n_channels} active electrodes")
    body = "\n".join([
        f"Your recording {e.recording_name} has been analysed.",
        "",
        f"  Total spikes:        {e.total_spikes:,}",
        f"  Active electrodes:   {e.active_electrodes} of {e.n_channels} (>= 5 spikes/min)",
        f"  Mean firing rate:    {e.mean_firing_rate_hz:.2f} Hz (mean over active electrodes)",
        f"  Bursting electrodes: {e.bursting_electrodes}",
        f"  Network bursts:      {e.network_bursts}",
        f"  Synchrony (STTC):    {'-' if e.sttc_mean is None else f'{e.sttc_mean:.3f}'}",
        *_stimulation(e),
        f"  Duration:            {e.duration_s:.1f} s",
        f"  Channels:            {e.n_channels}",
        "",
    ] + (["Quality notes:", *(f"  - {n}" for n in e.quality_notes), ""] if e.quality_notes else []) + ([
        "The full report (pictures, per-electrode metrics, parameters used):",
        f"  {e.report_url}",
        f"  This link works until {e.report_url_expires_at:%Y-%m-%d %H:%M} UTC."
        if e.report_url_expires_at else "",
        "",
    ] if e.report_url else []) + [
        f"Recording id: {e.recording_id}",
        f"Summary:      {e.summary_key}",
        f"Spike table:  {e.spikes_key}",
        "",
        "-- Neurocyte",
    ])
    return subject, body


def _stimulation(e: RecordingSummarized) -> list[str]:
    if not e.stimuli:
        return []
    if e.responding_electrodes is None:
        return [f"  Stimulation:         {e.stimuli} stimuli (too few to measure a response)"]
    latency = "" if e.response_latency_ms is None else f", median latency {e.response_latency_ms:.1f} ms"
    return [f"  Stimulation:         {e.responding_electrodes} electrodes respond to {e.stimuli} stimuli{latency}"]


def _upload_footer(e: RecordingRejected | DuplicateUploadSkipped) -> list[str]:
    """Ids to quote when writing to us, for mails about an upload (not a processed recording)."""
    return ["", f"Recording id: {e.recording_id}", f"Upload:       {e.upload_key}", "", "-- Neurocyte"]


def rejection_email(e: RecordingRejected) -> tuple[str, str]:
    name = e.recording_name or e.recording_id
    subject = f"Neurocyte: {name} could not be processed"
    body = "\n".join([
        f"Your upload {name} was not processed, for this reason:",
        "",
        f"  {e.reason}",
        "",
        "Nothing was analysed. Fix the problem and upload the recording again",
        "(`neurocyte validate FILE` checks a file before you upload it).",
        *_upload_footer(e),
    ])
    return subject, body


def duplicate_email(e: DuplicateUploadSkipped) -> tuple[str, str]:
    subject = f"Neurocyte: {e.recording_name} was uploaded before; not processed again"
    when = e.original_uploaded_at.strftime("%Y-%m-%d %H:%M UTC")
    status = ("Its results were published then; the email with its link went to the uploader."
              if e.original_finished else
              "It has no published results yet: it is still being processed, or its processing failed.")
    body = "\n".join([
        f"Your upload {e.recording_name} has exactly the same content as",
        f"{e.original_recording_name} (recording id {e.original_recording_id}), uploaded {when}.",
        status,
        "",
        "So it was not processed a second time. To process it again anyway (for example",
        "after a failure), upload it with `neurocyte submit --reprocess`, or set",
        '"reprocess": true in its manifest.json.',
        *_upload_footer(e),
    ])
    return subject, body


def failure_email(e: ProcessingFailed) -> tuple[str, str]:
    subject = f"Neurocyte: {e.recording_name} could not be processed (kept for a retry)"
    body = "\n".join([
        f"Your recording {e.recording_name} was accepted, but its processing failed",
        f"repeatedly in the {e.stage} stage, so it has stopped. Nothing is lost: the upload and",
        "the work done so far are kept, and an operator has been alerted. Once the problem is",
        "fixed the recording is retried from where it stopped, and you will get its result.",
        "",
        f"  What failed: {e.reason}",
        "",
        f"Recording id: {e.recording_id} (quote it if you write to us)",
        "",
        "-- Neurocyte",
    ])
    return subject, body


def experiment_email(e: ExperimentSummarized) -> tuple[str, str]:
    subject = f"Neurocyte: experiment {e.experiment}: {e.recordings} recordings analysed"
    body = "\n".join([
        f"Every recording of your experiment {e.experiment} has been analysed; its report is ready.",
        "",
        "Findings:",
        *(f"  - {line}" for line in e.headline),
        "",
        *([
            "The experiment's report (conditions, dose-response, days in vitro, the plate, the tidy table):",
            f"  {e.report_url}",
            f"  This link works until {e.report_url_expires_at:%Y-%m-%d %H:%M} UTC." if e.report_url_expires_at else "",
            "",
        ] if e.report_url else []),
        f"Experiment: {e.experiment} (report {e.result_id})",
        f"Report:     {e.report_key}",
        "",
        "-- Neurocyte",
    ])
    return subject, body
