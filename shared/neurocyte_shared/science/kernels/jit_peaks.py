"""The detection kernels (numba): local extremes over neighbours, and peeling. Re-exported
by jit.py, the module the rest of the code uses."""

from __future__ import annotations

import numpy as np

from neurocyte_shared.science.kernels._numba import njit
from neurocyte_shared.science.kernels.codes import SIGN_NEG, SIGN_POS


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
            # grown in place, written out in both kernels: a shared helper returning the arrays
            # made find_peaks 1.7-3.9x slower under numba (384 ch: 14.8 s against 7.6 s)
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
def _fit(x, s0, templates, support, n_support, j, tt, noise_energy, f0, f1, fit_channels, a_min, a_max):
    """(energy removed, amplitude, share of the signal's energy removed) of template j placed
    at sample s0 of x; (0, 0, 0) if it does not fit inside x. Over the fit window of the first
    fit_channels channels: the signal's energy is what x holds there beyond the noise's
    expected energy (noise_energy), so that a spike's share does not depend on how many quiet
    channels the window spans."""
    if tt <= 0.0 or s0 < 0 or s0 + templates.shape[1] > x.shape[0]:
        return 0.0, 0.0, 0.0
    m = min(n_support[j], fit_channels)
    dot = 0.0
    xx = 0.0
    for u in range(f0, f1):
        for q in range(m):
            v = x[s0 + u, support[j, q]]
            dot += v * templates[j, u, q]
            xx += v * v
    a = min(max(dot / tt, a_min), a_max)
    gain = 2.0 * a * dot - a * a * tt
    signal = xx - noise_energy
    share = gain / signal if signal > 0.0 else 1.0
    return gain, a, share


@njit(cache=True, nogil=True, inline="always")
def _shifted(x, j, s_mid, gain, a, share, templates, support, n_support, energy, noise_energy, shift, a_min, a_max,
             f0, f1, fit_channels):
    """(gain, start, amplitude, share): the best of template j at s_mid (its fit given) and at
    s_mid +-shift."""
    best_gain, best_s, best_a, best_share = gain, s_mid, a, share
    for d in range(-shift, shift + 1):
        if d != 0:
            g, a_d, share_d = _fit(x, s_mid + d, templates, support, n_support, j, energy[j], noise_energy[j], f0, f1,
                                   fit_channels, a_min, a_max)
            if g > best_gain:
                best_gain, best_s, best_a, best_share = g, s_mid + d, a_d, share_d
    return best_gain, best_s, best_a, best_share


@njit(cache=True, nogil=True, inline="always")
def _best_fit(x, t, c, templates, support, n_support, energy, noise_energy, first, cand, before, shift, a_min,
              a_max, f0, f1, fit_channels):
    """(gain, template, start, amplitude, share) of the template that removes the most energy at
    sample t for a spike peaking on channel c: each candidate at t, then the best one +-shift."""
    best_gain, best_j, best_s, best_a, best_share = 0.0, -1, 0, 0.0, 0.0
    for k in range(first[c], first[c + 1]):
        j = cand[k]
        gain, a, share = _fit(x, t - before, templates, support, n_support, j, energy[j], noise_energy[j], f0, f1,
                              fit_channels, a_min, a_max)
        if gain > best_gain:
            best_gain, best_j, best_s, best_a, best_share = gain, j, t - before, a, share
    if best_j >= 0:
        best_gain, best_s, best_a, best_share = _shifted(x, best_j, best_s, best_gain, best_a, best_share, templates,
                                                         support, n_support, energy, noise_energy, shift, a_min,
                                                         a_max, f0, f1, fit_channels)
    return best_gain, best_j, best_s, best_a, best_share


@njit(cache=True, nogil=True, inline="always")
def _place(x, templates, support, n_support, j, s, a32):
    """Subtract template j at start s, scaled by a32 (-a32 adds it back exactly: negation is)."""
    for u in range(templates.shape[1]):
        for q in range(n_support[j]):
            x[s + u, support[j, q]] -= a32 * templates[j, u, q]


@njit(cache=True, nogil=True)
def _refit(x, t, c, j, s, a, templates, support, n_support, energy, noise_energy, first, cand, before, shift,
           a_min, a_max, f0, f1, fit_channels, min_share, prior_min_share, prior_start, prior_template,
           prior_amplitude):
    """A spike at (t, c) that no template explains well enough (its best fit: template j at s,
    amplitude a) may sit under an earlier spike whose fit took part of it: the earlier
    placement that subtracted the most at (t, c) is put back and fitted again with this spike's
    best fit taken away (its own template, +-shift), then this spike is fitted again on what
    remains. Kept only if both fits explain their share (prior_min_share, min_share); the
    earlier placement is then updated in place. Returns (template, start, amplitude) of this
    spike, template -1 (and x as it was) if not."""
    width = templates.shape[1]
    n_prior = prior_start.shape[0]
    k = np.searchsorted(prior_start, t - width - 2 * shift)
    k_best, v_best = -1, 0.0
    while k < n_prior and prior_start[k] <= t + 2 * shift:
        jk, u = prior_template[k], t - prior_start[k]
        if 0 <= u < width:
            for q in range(n_support[jk]):
                if support[jk, q] == c:
                    v = abs(prior_amplitude[k] * templates[jk, u, q])
                    if v > v_best:
                        k_best, v_best = k, v
                    break
        k += 1
    if k_best < 0:
        return -1, 0, 0.0
    jk, sk, ak = prior_template[k_best], prior_start[k_best], prior_amplitude[k_best]
    _place(x, templates, support, n_support, jk, sk, -ak)  # the earlier spike put back
    a32 = np.float32(a)
    _place(x, templates, support, n_support, j, s, a32)
    gain, a_k, share_k = _fit(x, sk, templates, support, n_support, jk, energy[jk], noise_energy[jk], f0, f1,
                              fit_channels, a_min, a_max)
    g2, s2, a2, share2 = _shifted(x, jk, sk, gain, a_k, share_k, templates, support, n_support, energy,
                                  noise_energy, shift, a_min, a_max, f0, f1, fit_channels)
    _place(x, templates, support, n_support, j, s, -a32)
    if g2 <= 0.0 or share2 < prior_min_share:
        _place(x, templates, support, n_support, jk, sk, ak)
        return -1, 0, 0.0
    ak2 = np.float32(a2)
    _place(x, templates, support, n_support, jk, s2, ak2)
    gain, j3, s3, a3, share3 = _best_fit(x, t, c, templates, support, n_support, energy, noise_energy, first, cand,
                                         before, shift, a_min, a_max, f0, f1, fit_channels)
    if j3 < 0 or share3 < min_share:
        _place(x, templates, support, n_support, jk, s2, -ak2)
        _place(x, templates, support, n_support, jk, sk, ak)
        return -1, 0, 0.0
    prior_start[k_best] = s2
    prior_amplitude[k_best] = ak2
    return j3, s3, a3


@njit(cache=True, nogil=True)
def peel(x, times, channels, templates, support, n_support, noise_var, first, cand, before, shift, a_min, a_max,
         fit_before, fit_after, fit_channels, min_share, prior_min_share, prior_start, prior_template,
         prior_amplitude, placed_start, placed_template, placed_amplitude):
    """Subtract from x (samples x channels, float32, in place) each spike (times[i],
    channels[i]), in the order given, as the template that removes the most energy: the
    candidates are cand[first[c]:first[c + 1]] for peak channel c, each tried at the spike's
    sample (the best one then also +-shift samples) and scaled by its least-squares amplitude
    clipped to [a_min, a_max]. templates[j] is (width x max support), its sample `before` on
    the peak, over channels support[j, :n_support[j]] (nearest first). The fit looks at samples
    before-fit_before to before+fit_after of the first fit_channels channels (where a spike has
    its energy: the cost per spike is what limits speed); the whole template is subtracted.
    Matching pursuit's acceptance: the best fit is subtracted only if it removes at least
    min_share of the signal's energy in the fit window (beyond the noise's, from noise_var per
    channel); a template that does not explain the signal would leave its mismatch behind,
    which looks like a spike. prior_*: spikes subtracted before (sorted by start; may be
    empty): a spike short of min_share is tried again with the earlier spike under it fitted
    anew (`_refit`). A spike left as it is (no fit, no template for its channel, or a window
    leaving x) has placed_template -1; otherwise placed_start/template/amplitude[i] say what
    was subtracted where (for `subtracted_at`, cheaper than keeping a copy of x)."""
    width = templates.shape[1]
    n_tmpl = templates.shape[0]
    f0 = max(0, before - fit_before)
    f1 = min(width, before + fit_after + 1)
    energy = np.zeros(n_tmpl)
    noise_energy = np.zeros(n_tmpl)
    for j in range(n_tmpl):
        for q in range(min(n_support[j], fit_channels)):
            noise_energy[j] += noise_var[support[j, q]] * (f1 - f0)
            for u in range(f0, f1):
                energy[j] += templates[j, u, q] * templates[j, u, q]
    for i in range(times.shape[0]):
        c = channels[i]
        best_gain, best_j, best_s, best_a, best_share = _best_fit(
            x, times[i], c, templates, support, n_support, energy, noise_energy, first, cand, before, shift, a_min,
            a_max, f0, f1, fit_channels)
        if best_j >= 0 and best_share < min_share:
            if prior_start.shape[0] > 0:
                best_j, best_s, best_a = _refit(
                    x, times[i], c, best_j, best_s, best_a, templates, support, n_support, energy, noise_energy,
                    first, cand, before, shift, a_min, a_max, f0, f1, fit_channels, min_share, prior_min_share,
                    prior_start, prior_template, prior_amplitude)
            else:
                best_j = -1
        placed_template[i] = best_j
        if best_j < 0:
            continue
        a32 = np.float32(best_a)
        placed_start[i] = best_s
        placed_amplitude[i] = a32
        _place(x, templates, support, n_support, best_j, best_s, a32)


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


@njit(cache=True, nogil=True, inline="always")
def _half_bits(f):
    """The float16 bits of the float32 with bits f, rounded to nearest even as numpy rounds,
    clipped to the largest float16 (an artefact, not inf). numba has no float16 on the CPU."""
    sign = (f >> 16) & 0x8000
    a = f & 0x7FFFFFFF
    if a > 0x7F800000:  # NaN
        return sign | 0x7E00
    if a >= 0x477FE000:  # |v| >= 65504, the largest float16
        return sign | 0x7BFF
    if a < 0x38800000:  # below the smallest normal float16: subnormal or zero
        if a < 0x33000000:  # under half the smallest subnormal
            return sign
        e = a >> 23
        m = (a & 0x007FFFFF) | 0x00800000
        shift = 126 - e  # the value is m x 2^(e - 150); a subnormal float16 counts 2^-24s
        half = m >> shift
        rest = m & ((1 << shift) - 1)
        mid = 1 << (shift - 1)
        if rest > mid or (rest == mid and (half & 1)):
            half += 1
        return sign | half
    m = a & 0x007FFFFF
    h = ((a - 0x38000000) >> 13) & 0x7FFF
    rest = m & 0x1FFF
    if rest > 0x1000 or (rest == 0x1000 and (h & 1)):
        h += 1
    return sign | h


@njit(cache=True, nogil=True)
def gather_snippets(bits, times, channels, support, n_support, before, out):
    """out[i, k, j] = float16 bits of x[times[i] - before + k, support[channels[i], j]] for
    x = bits viewed as float32 (samples x channels); 0 past a channel's n_support columns.
    One pass per spike: numpy's fancy indexing builds two index arrays of the output's size
    first, then converts to float16 in another pass (together about twice the time on 384
    channels)."""
    n, width, n_cols = out.shape
    for i in range(n):
        c = channels[i]
        m = n_support[c]
        t0 = times[i] - before
        for k in range(width):
            row = t0 + k
            for j in range(m):
                out[i, k, j] = _half_bits(np.int64(bits[row, support[c, j]]))
            for j in range(m, n_cols):
                out[i, k, j] = 0


@njit(cache=True, nogil=True, inline="always")
def _pooled(x, t, c, inv_noise, index, weight, count):
    """The weighted sum of x[t] over channel c's neighbours, each in units of its noise."""
    y = 0.0
    for k in range(count[c]):
        m = index[c, k]
        y += weight[c, k] * x[t, m] * inv_noise[m]
    return y


@njit(cache=True, nogil=True)
def pooled_marks(x, inv_noise, z_min, threshold, pooled_threshold, index, weight, count, inv_scale, start, stop):
    """Samples in [start, stop) that do not cross threshold on their own channel (in units of
    its noise: x * inv_noise >= -threshold) but lie below -z_min there, and whose weighted sum
    over the channel's neighbours (`_pooled`, times inv_scale: in units of its own noise) lies
    below -pooled_threshold. Negative peaks only. Returns (sample, channel) arrays, by sample
    then channel."""
    n_t, n_c = x.shape
    cap = 1024
    ts = np.empty(cap, np.int64)
    cs = np.empty(cap, np.int32)
    n = 0
    for t in range(start, stop):
        hit = 0
        for c in range(n_c):  # branch-free: most rows have no sample that low
            hit |= x[t, c] * inv_noise[c] < -z_min
        if hit == 0:
            continue
        for c in range(n_c):
            z = x[t, c] * inv_noise[c]
            if z >= -z_min or z < -threshold or count[c] < 2 or inv_scale[c] == 0.0:
                continue
            if _pooled(x, t, c, inv_noise, index, weight, count) * inv_scale[c] > -pooled_threshold:
                continue
            # grown in place, written out in both kernels: a shared helper returning the arrays
            # made find_peaks 1.7-3.9x slower under numba (384 ch: 14.8 s against 7.6 s)
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


@njit(cache=True, nogil=True)
def pooled_rows(x, inv_noise, index, weight, count, step, out):
    """out[i, c] = `_pooled` at sample i * step (0 where channel c has no neighbour): a sample
    of the pooled traces, whose spread is their noise."""
    n_c = x.shape[1]
    for i in range(out.shape[0]):
        t = i * step
        for c in range(n_c):
            out[i, c] = _pooled(x, t, c, inv_noise, index, weight, count) if count[c] >= 2 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _silenced_near(x, t, c, index, count, within, zeros, rows):
    """Whether an electrode channel c pools holds a silenced sample (exactly 0) within
    +-within samples of t. zeros: each channel's count of them over `rows` samples, which
    decides without a look for a channel with none or all (a dead electrode)."""
    partial = False
    for k in range(count[c]):
        z = zeros[index[c, k]]
        if z == rows:
            return True
        partial |= z > 0
    if not partial:
        return False
    for s in range(max(0, t - within), min(x.shape[0], t + within + 1)):
        for k in range(count[c]):
            e = index[c, k]
            if zeros[e] > 0 and x[s, e] == 0:
                return True
    return False


@njit(cache=True, nogil=True)
def matched_marks(x, inv_noise, z_min, half, index, weight, count, kernel, at, shift, inv_pool, pool_min, inv_scale,
                  threshold, start, stop, silence):
    """Spikes the matched filter shows in [start, stop): a trough of a channel's trace at least
    z_min deep in units of its noise (the lowest within +-half samples), where the traces
    pooled over its neighbours (`_pooled`, times inv_pool: in units of their noise) lie below
    -pool_min and, correlated with kernel (its trough at `at`), peak within +-shift samples at
    threshold or more (times inv_scale: in units of the filter's noise), and no electrode it
    pools holds a silenced sample (exactly 0) within +-silence samples of that peak. Returns
    (sample of the filter's peak, channel, score) arrays, by trough then channel."""
    n_t, n_c = x.shape
    width = kernel.shape[0]
    span = width + 2 * shift
    pooled = np.empty(span, np.float32)
    cap = 1024
    ts = np.empty(cap, np.int64)
    cs = np.empty(cap, np.int32)
    ss = np.empty(cap, np.float32)
    n = 0
    # each channel's depth in microvolts, float32 like x: the scan of every sample then runs in
    # vector registers (with the product in float64, it took 60 % of this kernel's time)
    depth = np.empty(n_c, np.float32)
    for c in range(n_c):
        depth[c] = -z_min / inv_noise[c] if inv_noise[c] > 0 and count[c] >= 2 and inv_scale[c] > 0 else -np.inf
    lo = max(start, half, at + shift)
    hi = min(stop, n_t - half, n_t - (width - at) - shift)
    # each channel's silenced samples, over every row a candidate's +-silence can reach
    zeros = np.zeros(n_c, np.int64)
    z_lo, z_hi = max(0, lo - shift - silence), min(n_t, hi + shift + silence)
    if silence > 0:
        for t in range(z_lo, z_hi):
            for c in range(n_c):
                zeros[c] += x[t, c] == 0
    for t in range(lo, hi):
        hit = False
        for c in range(n_c):  # branch-free: most rows have no sample that low
            hit |= x[t, c] < depth[c]
        if not hit:
            continue
        for c in range(n_c):
            v = x[t, c]
            if v >= depth[c]:
                continue
            trough = True
            for d in range(1, half + 1):
                if x[t - d, c] < v or x[t + d, c] < v:
                    trough = False
                    break
            if not trough or _pooled(x, t, c, inv_noise, index, weight, count) * inv_pool[c] > -pool_min:
                continue
            t0 = t - shift - at
            for j in range(span):  # each pooled sample once, for every shift
                pooled[j] = _pooled(x, t0 + j, c, inv_noise, index, weight, count)
            best = -1e30
            best_t = t
            for s in range(2 * shift + 1):
                m = 0.0
                for j in range(width):
                    m += kernel[j] * pooled[s + j]
                if m > best:
                    best = m
                    best_t = t + s - shift
            best *= inv_scale[c]
            if best < threshold or (silence > 0 and _silenced_near(x, best_t, c, index, count, silence, zeros,
                                                                   z_hi - z_lo)):
                continue
            if n == cap:
                cap *= 2
                ts2 = np.empty(cap, np.int64)
                cs2 = np.empty(cap, np.int32)
                ss2 = np.empty(cap, np.float32)
                ts2[:n] = ts[:n]
                cs2[:n] = cs[:n]
                ss2[:n] = ss[:n]
                ts, cs, ss = ts2, cs2, ss2
            ts[n] = best_t
            cs[n] = c
            ss[n] = best
            n += 1
    return ts[:n].copy(), cs[:n].copy(), ss[:n].copy()
