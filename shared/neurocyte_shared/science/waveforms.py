"""Each electrode's mean spike waveform and its spread, for the report: summed window by window
(shard by shard in the pipeline) and merged, so the whole recording is never held at once."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

BEFORE_MS, AFTER_MS = 1.0, 2.0  # the waveform shown around each spike's peak
PER_WINDOW = 50  # spikes per electrode and window that are summed: enough for a mean, cheap to gather


@dataclass(frozen=True)
class Taken:
    """Spikes' waveforms taken from a window's traces (`Waveforms.take`), not yet summed."""

    sample_index: np.ndarray
    channel_index: np.ndarray
    snippets: np.ndarray  # spikes x width, float32
    given: np.ndarray  # each one's position among the spikes take was given


@dataclass
class Waveforms:
    """Per channel: the sum and the sum of squares of its spikes' filtered waveforms (uV, on its
    own electrode, peak at sample `before`) and how many were summed."""

    sampling_rate_hz: float
    before: int
    total: np.ndarray  # channels x width, float64
    squares: np.ndarray  # channels x width, float64
    count: np.ndarray  # channels, int64

    @staticmethod
    def empty(n_channels: int, sampling_rate_hz: float) -> Waveforms:
        before = int(round(BEFORE_MS * 1e-3 * sampling_rate_hz))
        width = before + int(round(AFTER_MS * 1e-3 * sampling_rate_hz)) + 1
        return Waveforms(sampling_rate_hz, before, np.zeros((n_channels, width)), np.zeros((n_channels, width)),
                         np.zeros(n_channels, np.int64))

    @property
    def width(self) -> int:
        return self.total.shape[1]

    def add(self, x: np.ndarray, sample_index: np.ndarray, channel_index: np.ndarray) -> None:
        """Sum the first PER_WINDOW spikes of each channel (time order) from preprocessed traces
        x (samples x channels); spikes too near x's ends are left out."""
        self.add_taken(self.take(x, sample_index, channel_index))

    def take(self, x: np.ndarray, sample_index: np.ndarray, channel_index: np.ndarray) -> Taken:
        """The spikes' waveforms from x, to be summed later (`add_taken`), when x has changed
        and which of the spikes are kept is known; spikes too near x's ends are left out."""
        t, c = np.asarray(sample_index, np.int64), np.asarray(channel_index, np.int64)
        ok = (t >= self.before) & (t + self.width - self.before <= x.shape[0])
        t, c = t[ok], c[ok]
        snippets = x[t[:, None] + np.arange(-self.before, self.width - self.before)[None, :], c[:, None]]
        return Taken(t, c, snippets.astype(np.float32), np.flatnonzero(ok))

    def add_taken(self, taken: Taken, keep: np.ndarray | None = None) -> None:
        """Sum the first PER_WINDOW taken spikes of each channel (time order); keep: a mask over
        the spikes `take` was given, those to sum."""
        t, c, snippets = taken.sample_index, taken.channel_index, taken.snippets
        if keep is not None:
            kept = np.asarray(keep, bool)[taken.given]
            t, c, snippets = t[kept], c[kept], snippets[kept]
        order = np.lexsort((t, c))
        by_channel = c[order]
        first = np.searchsorted(by_channel, by_channel, "left")
        chosen = order[np.arange(order.size) - first < PER_WINDOW]
        if not chosen.size:
            return
        c, snippets = c[chosen], snippets[chosen].astype(np.float64)
        np.add.at(self.total, c, snippets)
        np.add.at(self.squares, c, snippets * snippets)
        self.count += np.bincount(c, minlength=self.count.size)

    def merge(self, other: Waveforms) -> None:
        self.total += other.total
        self.squares += other.squares
        self.count += other.count

    def mean_uv(self) -> np.ndarray:
        """channels x width; NaN where a channel has no spike."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.count[:, None]

    def std_uv(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.mean_uv()
            return np.sqrt(np.maximum(self.squares / self.count[:, None] - mean * mean, 0.0))

    def to_bytes(self) -> bytes:
        """The channels with spikes only (a shard's sums: float32 holds them)."""
        rows = np.flatnonzero(self.count)
        buf = io.BytesIO()
        np.savez_compressed(buf, rate=np.float64(self.sampling_rate_hz), before=np.int64(self.before),
                            channels=np.int64(self.count.size), rows=rows, total=self.total[rows].astype(np.float32),
                            squares=self.squares[rows].astype(np.float32), count=self.count[rows])
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> Waveforms:
        z = np.load(io.BytesIO(data))
        out = Waveforms.empty(int(z["channels"]), float(z["rate"]))
        rows = z["rows"]
        out.total[rows], out.squares[rows], out.count[rows] = z["total"], z["squares"], z["count"]
        return out

    @staticmethod
    def merged(parts: list[Waveforms | None]) -> Waveforms | None:
        """The sum of every part; None if any is missing (an older shard: no waveforms shown)."""
        if not parts or any(p is None for p in parts):
            return None
        out = Waveforms(parts[0].sampling_rate_hz, parts[0].before, parts[0].total.copy(), parts[0].squares.copy(),
                        parts[0].count.copy())
        for p in parts[1:]:
            out.merge(p)
        return out
