"""Compiled inner loops of the detector (numba), for speed per core: here filtering, the
common reference and the noise; peaks and peeling in jit_peaks.py (re-exported here).

Why numba: the hot path is an IIR filter run forward and backward, a median across channels
per sample and a local-extreme test; numpy/scipy do each as a separate pass over memory
(SpikeInterface: 18 M samples/s end to end). Here the three are fused and the data stays
time-major (samples x channels, as recorded), so the inner loop runs over channels,
contiguous, which the compiler vectorises (8 float32 lanes with AVX2).

Kernels are compiled once per input dtype and cached on disk (`cache=True`, NUMBA_CACHE_DIR
where the package directory is read-only), and release the GIL (`nogil=True`) so `--jobs N`
runs them in threads over one memory map.
"""

from __future__ import annotations

import numpy as np

from neurocyte_shared.science.kernels._numba import njit
from neurocyte_shared.science.kernels.codes import (  # noqa: F401
    REF_MEAN,
    REF_MEDIAN,
    REF_NONE,
    SIGN_BOTH,
    SIGN_NEG,
    SIGN_POS,
)

# The detection kernels live in jit_peaks.py; here, as one module, for load() and the AOT build.
from neurocyte_shared.science.kernels.jit_peaks import (  # noqa: F401
    find_peaks,
    gather_snippets,
    matched_marks,
    peel,
    pooled_marks,
    pooled_rows,
    subtracted_at,
)


@njit(cache=True, nogil=True, inline="always")
def _select(a, n, k):
    """The k-th smallest of a[:n], placed at a[k] with a[:k] <= a[k] (reorders a).
    Quickselect with branch-free partitions: the comparisons are data, not jumps, so random
    data costs no mispredictions (2.5x faster than a classic Hoare loop here)."""
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        p = max(min(x, y), min(max(x, y), z))  # median of three
        j = lo
        for i in range(lo, hi + 1):  # [lo, j) < p
            v = a[i]
            a[i] = a[j]
            a[j] = v
            j += v < p
        if k < j:
            hi = j - 1
            continue
        j2 = j
        for i in range(j, hi + 1):  # [j, j2) == p: progress even on ties
            v = a[i]
            a[i] = a[j2]
            a[j2] = v
            j2 += v == p
        if k < j2:
            a[k] = p
            break
        lo = j2
    return a[k]


@njit(cache=True, nogil=True, inline="always")
def _median_of_selected(a, k, n_total, m):
    """np.median's value once a[k] holds the k-th smallest with a[:k] below it."""
    if n_total % 2 == 0:
        lower = a[0]
        for i in range(1, k):
            lower = max(lower, a[i])
        m = (m + lower) * np.float32(0.5)
    return m


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _sections(row, z, sos, n_c):
    """Run one sample of every channel through the cascade of biquads (transposed direct
    form II), in place. The loop over channels is contiguous and vectorises."""
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
        for c in range(n_c):
            xi = row[c]
            y = b0 * xi + z[s, 0, c]
            z[s, 0, c] = b1 * xi - a1 * y + z[s, 1, c]
            z[s, 1, c] = b2 * xi - a2 * y
            row[c] = y


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _row_sum(row, n_c):
    """Sum of row[:n_c], reassociated so it vectorises: added in order, each add waits for
    the last (64 channels: 70 ns a sample, of 200 for filtering both ways)."""
    acc = np.float32(0.0)
    for c in range(n_c):
        acc += row[c]
    return acc


LANES = 64  # samples whose medians one pass of the network finds (fewer do not vectorise)


@njit(cache=True, nogil=True)
def _network_medians(out, t0, nb, n_c, net, lo_i, hi_i, buf, wire, ref_gain, ref_out):
    """Subtract from out[t0:t0 + nb] (nb <= LANES rows) each row's median (times each
    channel's ref_gain; the medians into ref_out[t0:t0 + nb]), exactly, by a
    median-selection network (`detection.median_network`) run on LANES samples at once: each
    compare-exchange is a min and a max over LANES contiguous values, which vectorise, with no
    data-dependent branch. buf has a row per wire (rows n_c and up hold +inf: padding to the
    network's size) and two spare rows; compare-exchanges write into the spares, never in
    place (in place, the compiler emits masked stores, slow on AMD), and `wire` tracks
    which row holds which wire."""
    n_w = wire.shape[0]
    for l in range(nb):
        for c in range(n_c):
            buf[c, l] = out[t0 + l, c]
    for c in range(n_c, n_w):
        for l in range(LANES):
            buf[c, l] = np.inf
    for i in range(n_w):
        wire[i] = i
    f1, f2 = n_w, n_w + 1
    for p in range(net.shape[0]):
        i, j = net[p, 0], net[p, 1]
        s1, s2 = wire[i], wire[j]
        for l in range(LANES):
            a = buf[s1, l]
            b = buf[s2, l]
            buf[f1, l] = a if a < b else b
            buf[f2, l] = b if a < b else a
        wire[i], wire[j] = f1, f2
        f1, f2 = s1, s2
    lo, hi = wire[lo_i], wire[hi_i]
    for l in range(nb):
        m = (buf[lo, l] + buf[hi, l]) * np.float32(0.5) if lo != hi else buf[lo, l]
        ref_out[t0 + l] = m
        for c in range(n_c):
            out[t0 + l, c] -= ref_gain[c] * m


@njit(cache=True, nogil=True, fastmath={"contract"})
def bandpass_reference(raw, gain, offset, sos, reference, net, ref_gain, ref_out, out):
    """raw (samples x channels, any numeric dtype) -> out (float32, same shape): microvolts,
    Butterworth second-order sections forward then backward (zero phase), then the common
    reference across channels per sample, times each channel's ref_gain (float32 per channel:
    ones for the plain reference); the reference itself goes to ref_out (float32 per sample).

    The forward pass starts from rest at the first sample's level (as scipy's sosfiltfilt
    initial conditions do), so a DC offset makes no start-up transient; the caller's margins
    absorb what remains.

    The median per sample is exact (equal to np.median) but found cheaply: the median moves
    with the common mode, so the previous median shifted by the change of the row mean
    predicts it; one pass counts the values below a bracket around the prediction and
    gathers those inside, and only that handful is selected from. A miss (the median outside
    the bracket) widens the bracket and falls back to selecting from the whole row.
    With a median-selection network (net: compare-exchange pairs over wires, the median on
    wires (n_c - 1) // 2 and n_c // 2; see `detection.median_network`; empty for none), the
    median instead comes from the network, LANES samples at a time."""
    n_t, n_c = raw.shape
    z = np.zeros((sos.shape[0], 2, n_c), np.float32)
    row = np.empty(n_c, np.float32)
    level = np.empty(n_c, np.float32)
    g = np.float32(gain)
    o = np.float32(offset)
    for c in range(n_c):
        level[c] = np.float32(raw[0, c]) * g + o
    for t in range(n_t):
        for c in range(n_c):
            row[c] = np.float32(raw[t, c]) * g + o - level[c]
        _sections(row, z, sos, n_c)
        for c in range(n_c):
            out[t, c] = row[c]
    z[:] = 0
    by_network = reference == REF_MEDIAN and n_c > 1 and net.shape[0] > 0
    n_w = int(net[:, 1].max()) + 1 if by_network else 0  # the network's size: n_c padded
    buf = np.empty((n_w + 2, LANES), np.float32)
    wire = np.empty(n_w, np.int64)
    scratch = np.empty(n_c, np.float32)
    target = max(8, int(4.0 * np.sqrt(n_c)))  # values gathered per sample, about
    pred = np.float32(0.0)
    half_width = np.float32(1.0)
    mean_prev = np.float32(0.0)
    for t in range(n_t - 1, -1, -1):
        for c in range(n_c):
            row[c] = out[t, c]
        _sections(row, z, sos, n_c)
        if by_network:
            for c in range(n_c):
                out[t, c] = row[c]
            if t % LANES == 0:  # a block [t, t + LANES) is filtered: its medians, while in cache
                _network_medians(out, t, min(LANES, n_t - t), n_c, net, (n_c - 1) // 2, n_c // 2, buf, wire,
                                 ref_gain, ref_out)
            continue
        ref = np.float32(0.0)
        if reference != REF_NONE and n_c > 1:
            mean = _row_sum(row, n_c) / np.float32(n_c)
            ref = mean
        if reference == REF_MEDIAN and n_c > 1:
            pred += mean - mean_prev
            mean_prev = mean
            ref, m = _bracketed_median(row, n_c, pred - half_width, pred + half_width, scratch)
            if m < 0:
                half_width *= np.float32(1.5)
            elif m > target:
                half_width *= np.float32(0.9)
            pred = ref
        ref_out[t] = ref
        for c in range(n_c):
            out[t, c] = row[c] - ref_gain[c] * ref


@njit(cache=True, nogil=True, inline="always")
def _bracketed_median(v, n, lo, hi, scratch):
    """(np.median(v[:n]), how many values lay in [lo, hi]), v left as it is. When the median
    lies in the bracket, one branch-free pass counts the values below it and gathers those
    inside, and only that handful is selected from; when the bracket misses, the count is -1
    and the median comes from a select over all n."""
    k = n // 2
    first = k - 1 if n % 2 == 0 else k  # lowest rank the median needs
    below = 0
    g = 0
    for i in range(n):
        x = v[i]
        below += x < lo
        scratch[g] = x
        g += (x >= lo) & (x <= hi)
    if below <= first and k < below + g:
        kk = k - below
        return _median_of_selected(scratch, kk, n, _select(scratch, g, kk)), g
    for i in range(n):
        scratch[i] = v[i]
    return _median_of_selected(scratch, k, n, _select(scratch, n, k)), -1


@njit(cache=True, nogil=True)
def _median(col, n, gathered, sample):
    """np.median(col[:n]) exactly, col left as it is: a sample of the column brackets the
    median (2x faster than a quickselect over the whole column)."""
    m = sample.size
    step = max(1, n // m)
    m = min(m, n)
    for i in range(m):
        sample[i] = col[i * step]
    q = ((n // 2) * m) // n
    spread = int(2.0 * np.sqrt(m)) + 2
    lo = _select(sample, m, max(0, q - spread))
    hi = _select(sample, m, min(m - 1, q + spread))
    return _bracketed_median(col, n, lo, hi, gathered)[0]


@njit(cache=True, nogil=True)
def median_abs_deviation(x, out):
    """out[c] = median(|x[:, c] - median(x[:, c])|) for x (samples x channels), exactly as
    numpy computes it, without numpy's strided copies and full partitions.
    Columns are copied out up to 128 at a time, one pass over the rows per block: a column at
    a time would touch every row's cache line once per column, and narrower blocks stride
    through memory a page per row (on 1024 channels 16 columns took 1.25x as long)."""
    n_t, n_c = x.shape
    block = max(1, min(128, n_c))
    cols = np.empty((block, n_t), np.float32)
    gathered = np.empty(n_t, np.float32)
    sample = np.empty(1024, np.float32)
    for c0 in range(0, n_c, block):
        nb = min(block, n_c - c0)
        for t in range(n_t):
            for j in range(nb):
                cols[j, t] = x[t, c0 + j]
        for j in range(nb):
            col = cols[j]
            med = _median(col, n_t, gathered, sample)
            for t in range(n_t):
                col[t] = abs(col[t] - med)
            out[c0 + j] = _median(col, n_t, gathered, sample)
