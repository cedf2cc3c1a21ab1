"""Publishing one result: the merged spikes, the pictures, the report and, last, summary.json.

One function for the pipeline's aggregator (writing to S3) and `neurocyte report` (writing to
a folder): the same files in the same order, so a reader who sees summary.json sees it all.
Where the files go is the caller's `Sink`.
"""

from __future__ import annotations

from typing import Protocol

from neurocyte_shared.science.metrics import Summary
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms
from neurocyte_shared.storage.layout import REPORT_NAME, SPIKES_NAME, SUMMARY_NAME


class Sink(Protocol):
    def write(self, name: str, data: bytes, content_type: str) -> None:
        """Write one file of the result (any order; overwriting is harmless)."""

    def write_last(self, name: str, data: bytes, content_type: str) -> bool:
        """Write the file whose presence publishes the result; False if another writer won."""


def publish(summary: Summary, merged: SpikeTable, sink: Sink, waveforms: Waveforms | None = None,
            inputs: dict[str, str] | None = None) -> bool:
    """Write a result through `sink`: everything else first, summary.json last. True when
    this call published it, False when another writer had already. waveforms: the
    electrodes' mean waveforms are drawn when given; inputs (file -> SHA-256) make the report's
    reproducibility receipt."""
    from neurocyte_shared.science.report import figures, receipt, render_html
    from neurocyte_shared.storage import spikes

    pictures = figures(summary, merged, waveforms)
    sink.write(SPIKES_NAME, spikes.to_parquet_bytes(merged), "application/vnd.apache.parquet")
    for name, data in pictures.items():
        sink.write(name, data, "image/png")
    made = None if inputs is None else receipt(inputs, summary.parameters.get("detection", {}),
                                                summary.parameters.get("metrics", {}))
    sink.write(REPORT_NAME, render_html(summary, pictures, made).encode(), "text/html; charset=utf-8")
    return sink.write_last(SUMMARY_NAME, summary.model_dump_json(indent=1).encode(), "application/json")
