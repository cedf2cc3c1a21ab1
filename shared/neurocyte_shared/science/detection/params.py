"""Detection parameters: every one with its unit in its name and its default stated once,
and the fixed constants of peeling."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAD_TO_SIGMA = 0.6744897501960817  # MAD of a standard normal
BAD_NOISE_RATIO = 4.0  # a channel this many times noisier or quieter than the median one is not read
BAD_CLIPPED_SHARE = 0.01  # a channel clipped this share of a window's samples is not read in it
# The common reference, per channel: amplifiers and electrodes pick up common-mode noise with
# gains that differ by 10-15 %, so the median subtracted whole leaves that share of it behind
# (with 40 uV of common mode, recall at SNR 5-8 fell from 0.98 to 0.70). Each channel's gain on
# the reference is measured on REFERENCE_CHUNKS of the noise chunks, over samples within
# REFERENCE_CLIP_MAD of each's spread (no spikes, no artefacts), and used only where the
# common mode's variance is REFERENCE_MIN_RATIO x what the median of the channels' own noise
# gives: a weaker one leaves nothing worth removing and its gains would be noise.
REFERENCE_CHUNKS = 4
REFERENCE_CLIP_MAD = 3.0
REFERENCE_MIN_RATIO = 10.0
REFERENCE_MAX_GAIN = 2.0
# a clipped sample silences its channel this far each way: the filter rings that long after a
# jump to the rail
BLANK_MS = 5.0
# A stimulation artefact: at least ARTEFACT_SHARE of the electrodes (and ARTEFACT_MIN_ELECTRODES)
# beyond DetectionParams.artefact_mad x their noise at once, looked for every ARTEFACT_STRIDE_MS.
# A quarter, not half, as the common reference takes the shared part away and leaves the
# electrodes that differ from the median
ARTEFACT_SHARE = 0.25
ARTEFACT_MIN_MAD = 10.0  # DetectionParams.artefact_mad, if not 0 (off), at least this
ARTEFACT_MIN_ELECTRODES = 4
ARTEFACT_STRIDE_MS = 0.5
ARTEFACT_PROBES = 64  # electrodes looked at, spread over the array (all of a smaller one)
# An artefact or a clipped sample silences each electrode outwards until the filtered trace stays
# below ARTEFACT_END_MAD x the noise for ARTEFACT_QUIET_MS (at most ARTEFACT_MAX_MS each way): the
# recovery rings above the threshold for 10-12 ms in the real Multi Channel Systems recording
# (at a fixed 5 ms every artefact left a dozen false spikes; with 1 ms of quiet, rings came back)
ARTEFACT_END_MAD = 3.0
ARTEFACT_REACH_MAD = 5.0  # an electrode the artefact reaches: this far beyond its noise in the core
ARTEFACT_QUIET_MS = 2.0
ARTEFACT_MAX_MS = 50.0
# Where at least SUBTRACT_MIN_ELECTRODES electrodes reach the rails within SUBTRACT_GROUP_MS of
# each other (one stimulus seen by several), the artefact is subtracted before that silencing,
# so spikes in the milliseconds around a stimulus are read (ERAASR's idea: O'Shea & Shenoy
# 2018, with one template per stimulus). Per stimulus: SUBTRACT_BEFORE_MS before its first
# clipped sample (the Multi Channel Systems pulse starts with an 8 ms staircase) to
# SUBTRACT_AFTER_MS after its last, the template is the median over the group (at most
# SUBTRACT_TEMPLATE_ELECTRODES of it); its core, where the template's slope exceeds
# SUBTRACT_CORE_MAD x the sample-to-sample noise and SUBTRACT_CORE_SHARE of its largest slope
# (the rails and the jumps between them, which no fit follows), is silenced +-SUBTRACT_EDGE_MS;
# elsewhere each electrode's share of the template and of its slope (a sub-sample shift) is
# fitted by least squares, before and after the core apart, and subtracted, filtered as the
# traces are. What is left on most of the group at once (median |x| beyond SUBTRACT_COMMON_MAD
# x the noise, over electrodes SUBTRACT_VOTE_UM apart, which one spike cannot all reach) is the
# artefact's, not a spike's, and is silenced +-SUBTRACT_EDGE_MS. A group
# clipped for longer than SUBTRACT_MAX_SPAN_MS is not one pulse: it is silenced as before.
# Hybrid bench: recall within 15 ms of an artefact 0.02 -> 0.82 (by_channel 0.82), 34 detections
# on the artefacts of the real noise alone (a step on one electrode that the others lack)
SUBTRACT_MIN_ELECTRODES = 4
SUBTRACT_GROUP_MS = 1.0
SUBTRACT_MAX_SPAN_MS = 5.0
SUBTRACT_BEFORE_MS = 15.0
SUBTRACT_AFTER_MS = 50.0
SUBTRACT_TAPER_MS = 10.0  # the template fades in over the first half of the time before, out over this
SUBTRACT_PAD_MS = 20.0  # the filter's reach either side of what is subtracted
SUBTRACT_TEMPLATE_ELECTRODES = 64
SUBTRACT_CORE_MAD = 10.0
SUBTRACT_CORE_SHARE = 0.05
SUBTRACT_EDGE_MS = 1.0
SUBTRACT_COMMON_MAD = 3.0
SUBTRACT_VOTE_UM = 60.0  # electrodes that tell a common residual from a spike are this far apart

# Pooled detection (`peaks.find_peaks`): a neuron whose spike reaches threshold_mad on no
# electrode may still be plain on several at once. The traces, each in units of its noise, are
# summed over each electrode's neighbours with Gaussian weights (POOL_SIGMA_UM, cut at
# POOL_REACH sigmas; the weights of a sum have unit norm) and the sum is measured against its
# own noise (learned with the noise). A sample below pool_threshold_mad there, and below
# POOL_Z_MIN on its own electrode, is a spike when it is the extreme around it as any other.
# Not where a large spike nearby explains it: the far field and the late phase of a spike
# 30-60x the noise sum up to that 100-300 um away, 0.5-2 ms later, so a pooled spike is dropped
# where a spike found within POOL_ECHO_MS and POOL_ECHO_UM, times POOL_ECHO_RATIO, is as large
# as it (each in units of its electrode's noise).
# Bench, in process, against pool_threshold_mad=0: recall on six families 0.924 / 0.917 /
# 0.886 / 0.939 / 0.943 / 0.909 -> 0.925 / 0.918 / 0.888 / 0.941 / 0.946 / 0.920 (si 64, si
# 384, dense, nuisance, common mode, bursting), precision within 0.0015 of before (at a ratio of
# 0.1: +0.3 points more on dense and bursting, precision 0.0025 lower); 0.4 s more on dense.
POOL_SIGMA_UM = 17.5
POOL_REACH = 2.5
POOL_Z_MIN = 3.0
POOL_SCALE_STEP = 31  # every 31st sample of the learning chunks measures the pooled noise (300 a chunk)
POOL_ECHO_MS = 2.0
POOL_ECHO_UM = 300.0
POOL_ECHO_RATIO = 0.2
# Any peak, crossing the threshold or pooled, is dropped where a peak found in the same search
# within POOL_ECHO_MS and POOL_ECHO_UM is 1 / FAR_ECHO_RATIO = 12x as large or more: the far
# field and late phase of a spike 30-55x the noise still cross 5x 130-220 um away, 0.5-1 ms
# apart, on a 30 um grid, where de-duplication and the after-wave rule (within radius_um) do
# not look. Bench 8 x 8 at 30 um: precision 0.989 -> 0.993 at 10x; with peeling's test of what
# the others explain (PEEL_OTHERS_SHARE), which takes most of them, 12x keeps 0.996 and dense
# recall +0.07 points (8x: 0.995, dense -0.2 points).
FAR_ECHO_RATIO = 1 / 12

# Peeling (see `Templates`). Fixed rather than parameters: measured on the bench recordings,
# and none trades recall for precision the way peel_threshold_mad does.
TEMPLATE_BEFORE_MS, TEMPLATE_AFTER_MS = 1.5, 3.0  # the filtered spike's extent around its peak
# nearest channels within peel_radius_um a template spans. A large spike on a 17.5 um grid
# still reaches 5-15x the noise 60-80 um away: with 40 channels (62 um) the tail left behind
# made three quarters of the peaks found after subtraction, even with the true templates; with
# 64 (79 um), the far field 80-120 um away, 0.1-0.5 ms after a large spike, made most of the
# false spikes peel_apart_share lets through (96: dense precision 0.9943 -> 0.996, no recall lost);
# with 96 (97 um), on dense grids the bench never saw (seeds 7 and 11), the far field of spikes
# 40-50x the noise 100-110 um away crossed 4.5x in what remains: precision 0.988 (112: 0.995-0.996;
# 128: the same, bench dense recall -0.05 points)
TEMPLATE_MAX_CHANNELS = 112
# isolated spikes a peak channel needs for templates of its own: 8, not 10, gives units that
# fire slowly or crowd a dense grid a template (64 ch: +0.4 points of recall, dense +0.1)
TEMPLATE_MIN_SPIKES = 8
TEMPLATE_MIN_MEMBERS = 5  # isolated spikes a template is the mean of, at least
TEMPLATE_SPIKES_PER_CLUSTER = 20  # k-means tries one cluster per this many isolated spikes
TEMPLATE_MAX_CLUSTERS = 4  # templates per peak channel (units that peak on the same electrode)
CLUSTER_ROUNDS = 3  # k-means runs per channel, each without the last one's outliers
# Two clusters of a channel are one unit split by k-means when their means differ by no more than
# this, per dimension, in units of what the noise in two means of their sizes gives (pure noise
# split by k-means: 1.6-2.0 on the bench; two units: far above)
TEMPLATE_MERGE_STAT = 2.5
TEMPLATE_MIN_SHARE = 0.1  # a template needs this share of its channel's spikes: fewer are coincidences
TEMPLATE_SNIPPET_BUDGET = 16_384  # isolated spikes kept for learning, over all channels
# a learning spike has no other spike this close within its window: a little beyond the fit's
# reach on a dense grid (40 channels at 17.5 um). On the bench's 17.5 um grid with 120 units,
# 100 um left isolated spikes enough for 56 templates, 75 um for 92 (60 um: 100, but precision
# 0.990 against 0.992)
ISOLATION_UM = 75.0
# ... and this long either side: the fit's reach and a little more, not the whole snippet's
# 4.5 ms. A neighbour 2-4 ms away barely touches the mean of a few hundred snippets but left
# crowded units few isolated spikes (dense grid: 167 templates, not 130; recall +0.56 points)
ISOLATION_MS = 1.5
CANDIDATE_UM = 30.0  # a spike is fitted with the templates of peak channels this close (nearest neighbours)
PEEL_SHIFT = 1  # samples a template may move to fit
PEEL_FIT_MS = (0.3, 0.7)  # the fit looks this far before and after the peak,
PEEL_FIT_CHANNELS = 40  # on this many channels nearest the template's peak channel
PEEL_SCALE = (0.5, 2.0)  # the fitted amplitude's range, in units of the template
# Spikes are subtracted largest first within blocks of recording time this long, the blocks in
# time order, so the traces a block touches stay in cache (30 % less time on 384 channels, the
# same spikes but a few); blocks start at multiples of it from the recording's start.
PEEL_BLOCK_MS = 20.0
# a spike found in what remains is apart from the spikes found first (peel_apart_share) when
# none lies within this time and CANDIDATE_UM: a found spike's mismatch is at its own time
PEEL_APART_MS = 0.1
# A pooled spike found in what remains is dropped where a spike found first within POOL_ECHO_MS
# and POOL_ECHO_UM is this many times as large, or more (each in units of its electrode's
# noise): the far field of spikes 15-25x larger, 200-340 um away and 0.7-1 ms before, made most
# of the false ones on the 2-column probes. Not POOL_ECHO_RATIO: what remains holds no near
# field to explain, and 0.2 dropped two thirds of the spikes gained on the dense grid.
PEEL_ECHO_RATIO = 0.07
# A spike found in the first search that no template took is dropped where subtracting the
# spikes around it took PEEL_OTHERS_SHARE of its peak or more and left it below
# peel_threshold_mad: it was their far field (templates span 112 electrodes and 4.5 ms, beyond
# what the ratio rules above can tell). On grids the bench never saw, with bursting units
# (8 x 8 at 17.5 um, noise 7 uV), crossings 0.4-1 ms after spikes 20-40x the noise, 50-150 um
# away, made precision 0.962 -> 0.991. With FAR_ECHO_RATIO 12x, not 10x, on the bench families:
# precision 0.9923-0.9989 -> 0.9937-0.9990 (grid30 0.993 -> 0.996; 384 channels 0.9976 ->
# 0.9973), recall the same or up to +0.001. Not 0: a spike that owes a sliver of its peak to a
# neighbour's tail is still one.
PEEL_OTHERS_SHARE = 0.1
PEEL_RATIO = 0.8  # a peak in what remains must be this large against what was subtracted there
PEEL_FOOTPRINT = 0.25  # a template's own channels: where it reaches this share of its largest amplitude

# The matched search of what remains (`matched.find_matched`): the pooled traces through a
# filter of the recording's mean spike shape. Its noise is measured on the first
# MATCHED_LEARN_SAMPLES of each learning chunk; a candidate is a trough of an electrode's
# trace at least MATCHED_Z_MIN x its noise deep, scored at the filter's peak within
# MATCHED_SHIFT samples of it, where the pooled traces lie MATCHED_POOL_MIN deep or more. Its
# cost: about 3 % of detection's time in process (0.04 s of 1.28 s on the nuisance grid, one
# job), 2-9 % of the whole command on the bench (its row `matched search off`); with troughs
# 2.5x deep on both, twice that, for 0.5 % more of the bursting grid's spikes.
MATCHED_KERNEL_MS = (0.2, 0.3)  # the kernel: this long before and after the trough
MATCHED_LEARN_SAMPLES = 128
MATCHED_SHIFT = 2
MATCHED_Z_MIN = 3.0
MATCHED_POOL_MIN = 3.0
MATCHED_NEAR_MS = 2.0
MATCHED_ECHO_MS = 3.0
MATCHED_ECHO_UM = 300.0
MATCHED_NEAR_UM = 100.0
MATCHED_FAR_MS = 1.5
MATCHED_FAR_UM = 500.0
MATCHED_FAR_RATIO = 3.0
MATCHED_SILENCE_MS = 2.0  # nor beside a silenced sample on an electrode it pools


class DetectionParams(BaseModel):
    """Every detection parameter, with its unit in its name and its default stated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    freq_min_hz: float = Field(300.0, gt=0, description="bandpass low corner")
    freq_max_hz: float = Field(6000.0, gt=0, description="bandpass high corner (clipped below Nyquist)")
    filter_order: int = Field(5, ge=1, le=10, description="Butterworth order")
    reference: Literal["median", "mean", "none"] = Field("median", description="common reference")
    threshold_mad: float = Field(5.0, gt=0, description="threshold in multiples of MAD/0.6745 noise")
    peak_sign: Literal["neg", "pos", "both"] = "neg"
    dead_time_ms: float = Field(0.5, ge=0, description="a peak is the extreme within +- this window")
    radius_um: float = Field(50.0, ge=0, description="spatial de-duplication radius (0: per channel)")
    spatial_dead_time_ms: float = Field(
        0.2, ge=0, description="a peak must beat its neighbours within radius_um over +- this window")
    echo_window_ms: float = Field(
        3.0, ge=0, description="after-wave suppression: look back this far for a larger spike (0: off)")
    echo_ratio: float = Field(
        6.0, gt=1, description="a peak this many times smaller than a spike just before it is its after-wave")
    # 6: at 5.5 the far field of large spikes and some noise came through (with an echo ratio of
    # 0.1: precision 0.987 on the hum-and-common-mode family, 0.985 on the bursting one); at 6.5
    # half the spikes gained went
    pool_threshold_mad: float = Field(
        6.0, ge=0, description="a spike below threshold_mad on every electrode is found where the traces summed "
        "over nearby electrodes (17.5 um Gaussian weights) pass this many times their noise (0: off; negative "
        "peaks only)")
    peel: bool = Field(True, description="learn spike templates from the recording, subtract the spikes found and "
                       "detect again on what remains: finds spikes hidden under a larger one nearby")
    # below threshold_mad: what remains is searched for spikes a template explains, which is
    # template matching, and the acceptance keeps the noise out (4.5 found 0.4-0.7 % more of
    # the spikes on four bench families; at 4.25 the hum-and-common-mode family fell to 0.991
    # precision, at 4.0 to 0.981)
    peel_threshold_mad: float = Field(
        4.5, gt=0, description="threshold on what remains after subtraction, in multiples of the noise")
    # 5: at 4.5 the hum-and-common-mode families fell to 0.988-0.989 precision
    peel_pool_threshold_mad: float = Field(
        5.0, ge=0, description="pooled detection on what remains after subtraction, at this many times the pooled "
        "traces' noise (0: off)")
    peel_radius_um: float = Field(200.0, gt=0, description="a template spans the channels within this radius")
    matched_threshold_mad: float = Field(
        5.5, ge=0, description="with peel: what remains, pooled over nearby electrodes and filtered with the "
        "recording's mean spike shape, holds a spike where it passes this many times its noise (0: off; negative "
        "peaks only)")
    # Peeling's safeguards: it must not invent spikes (the bench shows what each costs and gains)
    peel_min_share: float = Field(
        0.5, ge=0, le=1, description="a spike is subtracted only if its template removes this share of the "
        "signal's energy around it (beyond the noise's); otherwise it is left as it is")
    peel_accept_share: float = Field(
        0.8, ge=0, le=1, description="a spike found in what remains is kept only if a template explains this "
        "share of its energy: the mismatch of a poorly fitted spike is not a spike")
    # 0.6: on the bench, against 0.8 for every spike, recall on the dense grid +0.4 points, on the
    # bursting units +0.3, elsewhere +0.05-0.1, precision 0.996 / 0.991 (0.5: dense precision
    # 0.993 for +0.1 point more). Without the test for spikes apart (0.6 for every spike over 8x
    # the noise), the bursting units' mismatches came through: 84 more detections, 18 of them
    # true, every false one at its large spike's time on the next electrode.
    peel_apart_share: float = Field(
        0.6, ge=0, le=1, description="a spike found in what remains that no spike found first lies within 0.1 ms "
        "and 30 um of (so not one's mismatch) is kept if a template explains this share of its energy")
    # 0.5, not less: on a dense grid another unit's spike falls in a template's footprint and
    # window for about a sixth of its isolated spikes, so a stricter share drops good templates
    peel_max_invented: float = Field(
        0.5, ge=0, le=1, description="a template is not used if, subtracted from its own isolated spikes, it "
        "leaves a spike-sized peak for more than this share of them (1: keep every template)")
    # 30: the real Multi Channel Systems recording's artefacts reach 50-1,600x the noise for 4 ms
    # on all of its 8 electrodes (never the rails); no neuron's spike reaches 30x on a quarter of
    # an array. Below ARTEFACT_MIN_MAD a large spike could pass for one.
    artefact_mad: float = Field(
        30.0, ge=0, description="a stimulation artefact: a quarter of the electrodes beyond this many times their "
        "noise at once; every electrode it reaches is silenced until its trace is quiet (0: off, for a recording "
        "whose artefacts were removed before upload)")
    noise_chunks: int = Field(30, ge=1, description="random chunks used to estimate the noise (and learn templates)")
    noise_chunk_s: float = Field(0.5, gt=0, description="length of each noise chunk")

    @field_validator("artefact_mad")
    @classmethod
    def _artefact_mad_off_or_large(cls, value: float) -> float:
        if 0 < value < ARTEFACT_MIN_MAD:
            raise ValueError(f"artefact_mad must be 0 (off) or at least {ARTEFACT_MIN_MAD:g}: "
                             "a large spike could be taken for an artefact below that")
        return value

    def dead_time_samples(self, sampling_rate_hz: float) -> int:
        return int(round(self.dead_time_ms * 1e-3 * sampling_rate_hz))

    def margin_samples(self, sampling_rate_hz: float) -> int:
        """Samples to read on each side of a window so its result equals the whole recording's:
        five time constants of the lowest filter frequency, plus the longest look-around."""
        filter_margin = int(math.ceil(5.0 / self.freq_min_hz * sampling_rate_hz))
        look = max(self.dead_time_ms, self.spatial_dead_time_ms, self.echo_window_ms)
        look += POOL_ECHO_MS  # a spike is weighed against the spikes this far from it (its far field)
        peel = peel_reach(sampling_rate_hz) if self.peel else 0
        return filter_margin + int(math.ceil(look * 1e-3 * sampling_rate_hz)) + peel + 1

    def cache_key(self) -> str:
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def peel_reach(sampling_rate_hz: float) -> int:
    """Samples a spike's subtraction reaches: a template's width plus its shift each way."""
    return _template_before(sampling_rate_hz) + _template_after(sampling_rate_hz) + 1 + 2 * PEEL_SHIFT


def _template_before(fs: float) -> int:
    return int(round(TEMPLATE_BEFORE_MS * 1e-3 * fs))


def _template_after(fs: float) -> int:
    return int(round(TEMPLATE_AFTER_MS * 1e-3 * fs))
