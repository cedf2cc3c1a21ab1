"""Compiled inner loops of the detector (numba), for speed per core.

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

import sys

import numpy as np

from neurocyte_shared.science.kernels.codes import (  # noqa: F401
    REF_MEAN,
    REF_MEDIAN,
    REF_NONE,
    SIGN_BOTH,
    SIGN_NEG,
    SIGN_POS,
)


def _skip_numba_blas_probe() -> None:
    """Numba probes for BLAS when its numpy support loads (at the first kernel call) by
    importing scipy.linalg: ~0.3 s of every command's start-up. These kernels use no linear
    algebra, so the probe is made to fail fast, once; scipy.linalg stays importable for
    everyone else. (Numba jitted code in this process then has no np.dot: none is used.)"""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


_skip_numba_blas_probe()
from numba import njit  # noqa: E402


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
def _network_medians(out, t0, nb, n_c, net, lo_i, hi_i, buf, wire):
    """Subtract from out[t0:t0 + nb] (nb <= LANES rows) each row's median, exactly, by a
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
        for c in range(n_c):
            out[t0 + l, c] -= m


@njit(cache=True, nogil=True, fastmath={"contract"})
def bandpass_reference(raw, gain, offset, sos, reference, net, out):
    """raw (samples x channels, any numeric dtype) -> out (float32, same shape): microvolts,
    Butterworth second-order sections forward then backward (zero phase), then the common
    reference across channels per sample.

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
                _network_medians(out, t, min(LANES, n_t - t), n_c, net, (n_c - 1) // 2, n_c // 2, buf, wire)
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
        for c in range(n_c):
            out[t, c] = row[c] - ref


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


@njit(cache=True, nogil=True, inline="always")
def _score(v, sign):
    if sign == SIGN_NEG:
        return -v
    if sign == SIGN_POS:
        return v
    return abs(v)


@njit(cache=True, nogil=True, inline="always")
def _beaten_on_channel(x, t, c, s, sign, u0, u1):
    """Channel c beats score s somewhere in samples [u0, u1) (the first of equal values wins)."""
    for u in range(u0, u1):
        su = _score(x[u, c], sign)
        if su > s or (su == s and u < t):
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _beaten_by_neighbour(x, c, s, sign, v0, v1, neighbours, n_neighbours):
    """A neighbour of c has a peak of its own in samples [v0, v1) that beats score s (a tie
    goes to the lower channel). Only the neighbour's local extremes count, not the flank of a
    spike whose extreme lies outside the window (another spike)."""
    n_t = x.shape[0]
    for k in range(n_neighbours[c]):
        m = neighbours[c, k]
        if m == c:
            continue
        for u in range(v0, v1):
            su = _score(x[u, m], sign)
            if (su > s or (su == s and m < c)) and (u == 0 or su >= _score(x[u - 1, m], sign)) and (
                    u == n_t - 1 or su >= _score(x[u + 1, m], sign)):
                return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _after_wave(x, t, big, sign, e0, channels, n):
    """Some channel of channels[:n] reaches score `big` in samples [e0, t)."""
    for k in range(n):
        m = channels[k]
        for u in range(e0, t):
            if _score(x[u, m], sign) >= big:
                return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _row_crosses(x, t, threshold, sign, n_c):
    """Some channel of row t is beyond its threshold. Most rows have none: this branch-free
    test over the row vectorises, and spares them the per-channel loop."""
    hit = 0
    if sign == SIGN_NEG:
        for c in range(n_c):
            hit |= -x[t, c] > threshold[c]
    elif sign == SIGN_POS:
        for c in range(n_c):
            hit |= x[t, c] > threshold[c]
    else:
        for c in range(n_c):
            hit |= abs(x[t, c]) > threshold[c]
    return hit != 0


@njit(cache=True, nogil=True)
def find_peaks(x, threshold, sign, half, spatial_half, echo, echo_ratio, start, stop, neighbours, n_neighbours):
    """Peaks of x (samples x channels, float32) in samples [start, stop):
    - above threshold[c] in the sign's direction;
    - the extreme within +-half samples on their channel (the first of equal values wins);
    - not beaten by a local extreme of any neighbour within +-spatial_half samples (a tie
      goes to the lower channel): one spike seen on several electrodes is one peak, on its
      peak channel, while a spike beside the flank of a larger one that peaks outside the
      window is kept;
    - not an after-wave: no value echo_ratio times larger on the channel or a neighbour in
      the `echo` samples before (a large spike's slow recovery phase crosses the threshold
      again 1-3 ms later; 0 disables).
    Returns (sample, channel) arrays sorted by sample then channel."""
    n_t, n_c = x.shape
    cap = 1024
    ts = np.empty(cap, np.int64)
    cs = np.empty(cap, np.int32)
    n = 0
    for t in range(start, stop):
        if not _row_crosses(x, t, threshold, sign, n_c):
            continue
        u0 = max(0, t - half)
        u1 = min(n_t, t + half + 1)
        v0 = max(0, t - spatial_half)
        v1 = min(n_t, t + spatial_half + 1)
        e0 = max(0, t - echo)
        for c in range(n_c):
            s = _score(x[t, c], sign)
            if s <= threshold[c]:
                continue
            if _beaten_on_channel(x, t, c, s, sign, u0, u1):
                continue
            if _beaten_by_neighbour(x, c, s, sign, v0, v1, neighbours, n_neighbours):
                continue
            # checked last: few candidates get this far
            if echo > 0 and _after_wave(x, t, s * echo_ratio, sign, e0, neighbours[c], n_neighbours[c]):
                continue
            if n == cap:
                cap *= 2
                ts2 = np.empty(cap, np.int64)
                cs2 = np.empty(cap, np.int32)
                ts2[:n] = ts[:n]
                cs2[:n] = cs[:n]
                ts, cs = ts2, cs2
            ts[n] = t
            cs[n] = c
            n += 1
    return ts[:n].copy(), cs[:n].copy()


@njit(cache=True, nogil=True, inline="always")
def _fit(x, s0, templates, support, n_support, j, tt, f0, f1, fit_channels, a_min, a_max):
    """(energy removed, amplitude) of template j placed at sample s0 of x; (0, 0) if it
    does not fit inside x."""
    if tt <= 0.0 or s0 < 0 or s0 + templates.shape[1] > x.shape[0]:
        return 0.0, 0.0
    m = min(n_support[j], fit_channels)
    dot = 0.0
    for u in range(f0, f1):
        for q in range(m):
            dot += x[s0 + u, support[j, q]] * templates[j, u, q]
    a = min(max(dot / tt, a_min), a_max)
    return 2.0 * a * dot - a * a * tt, a


@njit(cache=True, nogil=True)
def peel(x, times, channels, templates, support, n_support, first, cand, before, shift, a_min, a_max,
         fit_before, fit_after, fit_channels, placed_start, placed_template, placed_amplitude):
    """Subtract from x (samples x channels, float32, in place) each spike (times[i],
    channels[i]), in the order given, as the template that removes the most energy: the
    candidates are cand[first[c]:first[c + 1]] for peak channel c, each tried at the spike's
    sample (the best one then also +-shift samples) and scaled by its least-squares amplitude clipped to [a_min, a_max].
    templates[j] is (width x max support), its sample `before` on the peak, over channels
    support[j, :n_support[j]] (nearest first). The fit looks at samples before-fit_before to
    before+fit_after of the first fit_channels channels (where a spike has its energy: the
    cost per spike is what limits speed); the whole template is subtracted. A spike whose
    window leaves x, or whose channel has no template, is left as it is (placed_template -1);
    otherwise placed_start/template/amplitude[i] say what was subtracted where (for
    `subtracted_at`, cheaper than keeping a copy of x)."""
    width = templates.shape[1]
    n_tmpl = templates.shape[0]
    f0 = max(0, before - fit_before)
    f1 = min(width, before + fit_after + 1)
    energy = np.zeros(n_tmpl)
    for j in range(n_tmpl):
        for u in range(f0, f1):
            for q in range(min(n_support[j], fit_channels)):
                energy[j] += templates[j, u, q] * templates[j, u, q]
    for i in range(times.shape[0]):
        c = channels[i]
        best_gain = 0.0
        best_j = -1
        best_s = 0
        best_a = 0.0
        # the template first, at the spike's sample; then the shift, for that template only
        for k in range(first[c], first[c + 1]):
            j = cand[k]
            gain, a = _fit(x, times[i] - before, templates, support, n_support, j, energy[j], f0, f1, fit_channels,
                           a_min, a_max)
            if gain > best_gain:
                best_gain, best_j, best_s, best_a = gain, j, times[i] - before, a
        if best_j >= 0:
            s_mid = best_s
            for d in range(-shift, shift + 1):
                if d != 0:
                    gain, a = _fit(x, s_mid + d, templates, support, n_support, best_j, energy[best_j], f0, f1,
                                   fit_channels, a_min, a_max)
                    if gain > best_gain:
                        best_gain, best_s, best_a = gain, s_mid + d, a
        placed_template[i] = best_j
        if best_j < 0:
            continue
        a32 = np.float32(best_a)
        placed_start[i] = best_s
        placed_amplitude[i] = a32
        for u in range(width):
            for q in range(n_support[best_j]):
                v = a32 * templates[best_j, u, q]
                x[best_s + u, support[best_j, q]] -= v


@njit(cache=True, nogil=True)
def subtracted_at(t, c, starts, which, amplitudes, templates, support, n_support):
    """For each point (t[i], c[i]): the sum of what `peel` subtracted there, from its
    placements (starts sorted ascending, with their templates and amplitudes)."""
    width = templates.shape[1]
    out = np.zeros(t.shape[0], np.float32)
    for i in range(t.shape[0]):
        k = np.searchsorted(starts, t[i] - width + 1)  # the first placement that reaches t[i]
        while k < starts.shape[0] and starts[k] <= t[i]:
            j = which[k]
            for q in range(n_support[j]):
                if support[j, q] == c[i]:
                    out[i] += amplitudes[k] * templates[j, t[i] - starts[k], q]
                    break
            k += 1
    return out
