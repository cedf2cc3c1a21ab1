"""The spike table every stage passes on: a plain container, importable without the detector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpikeTable:
    """Detected spikes, sorted by time then channel. Columns as in the exported table."""

    sample_index: np.ndarray  # int64, from the start of the array given (or the recording)
    channel_index: np.ndarray  # int32, column in the recording
    amplitude_uv: np.ndarray  # float32, filtered and referenced amplitude at the peak
    # bool: found by peeling (in what remained once the spikes around it were subtracted);
    # None where nobody said (all False)
    peeled: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.sample_index.size)

    @property
    def peeled_mask(self) -> np.ndarray:
        return np.zeros(len(self), bool) if self.peeled is None else np.asarray(self.peeled, bool)

    def shifted(self, offset: int) -> SpikeTable:
        return SpikeTable(self.sample_index + offset, self.channel_index, self.amplitude_uv, self.peeled)

    @staticmethod
    def empty() -> SpikeTable:
        return SpikeTable(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @staticmethod
    def concat(tables: list[SpikeTable]) -> SpikeTable:
        if not tables:
            return SpikeTable.empty()
        t = SpikeTable(
            np.concatenate([x.sample_index for x in tables]).astype(np.int64),
            np.concatenate([x.channel_index for x in tables]).astype(np.int32),
            np.concatenate([x.amplitude_uv for x in tables]).astype(np.float32),
            np.concatenate([x.peeled_mask for x in tables]),
        )
        order = np.lexsort((t.channel_index, t.sample_index))
        return SpikeTable(t.sample_index[order], t.channel_index[order], t.amplitude_uv[order], t.peeled[order])
