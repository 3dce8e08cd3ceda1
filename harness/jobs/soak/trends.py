"""Trend verdicts: each metric's slope per step within a host's life, judged by no_growth.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from harness.judge import checks
from harness.judge.checks import UNKNOWN, Verdict

WARMUP_STEPS = 10           # first samples of each trend segment: the runtime warming up

# Trend metrics: the sample key that segments them (a host's metrics restart with it) and the
# largest slope per step that is not growth. A 4-minute pilot on 0.10.8 (13 hosts, ~7 steps per
# fault cycle) measured 0.046 fds, 0.009 threads and 0.011 MiB per step within host lives:
# these bounds sit well above that noise and below one descriptor (or thread, or 350 KiB)
# leaked per fault cycle. Disk is judged as what no held record owns (a started box's folder
# alone is ~48 MiB: the copied shim and libkrunfw), so the mix of boxes is not read as growth.
TRENDS: dict[str, tuple[str | None, float]] = {
    "host_rss_mib": ("host_gen", 0.05),
    "host_fds": ("host_gen", 0.1),
    "host_threads": ("host_gen", 0.05),
    # A runtime clears unowned box folders when it starts: what leaks, leaks within a host's
    # life (a daemon's), so the home is judged per host too.
    "home_unheld_mib": ("host_gen", 0.1),
    "leftover_dirs": ("host_gen", 0.01),
    "zombies": (None, 0.01),
}
# The least change of each metric worth a verdict: one descriptor, thread, folder or zombie;
# a MiB of memory or disk. A run too short for one such change, once, to read below the
# metric's bound cannot tell growth from a single step: its verdict is unknown.
UNITS: dict[str, float] = {"host_rss_mib": 1.0, "home_unheld_mib": 1.0}


def centred_segments(samples: Sequence[Mapping[str, Any]], metric: str,
                     segment: str | None, warmup: int = WARMUP_STEPS,
                     ) -> list[list[tuple[float, float]]]:
    """The metric against the step in each segment (a host's life, or the whole run) that has
    two samples or more after its first `warmup`, centred on the segment's means."""
    groups: dict[Any, list[tuple[float, float]]] = {}
    for s in samples:
        value = s.get(metric)
        key = s.get(segment) if segment else 0
        if value is None or key is None or "step" not in s:
            continue
        groups.setdefault(key, []).append((float(s["step"]), float(value)))
    out = []
    for pts in groups.values():
        pts = pts[warmup:]
        if len(pts) < 2:
            continue
        mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
        out.append([(x - mx, y - my) for x, y in pts])
    return out


def within_segments(samples: Sequence[Mapping[str, Any]], metric: str, segment: str | None,
                    warmup: int = WARMUP_STEPS) -> tuple[list[tuple[float, float]], int]:
    """The metric against the step, centred within each segment (a host's life, or the whole
    run), after each segment's first `warmup` samples. Regressing the pooled points gives the
    within-segment slope: a leak that restarts with every host is still a slope, while the drop
    at a restart is not read as shrinkage. Returns the points and how many segments gave some."""
    segs = centred_segments(samples, metric, segment, warmup)
    return [p for seg in segs for p in seg], len(segs)


def one_step_slope(segments: Sequence[Sequence[tuple[float, float]]], unit: float = 1.0,
                   ) -> float | None:
    """The largest slope per step that a single change of `unit`, once, anywhere in one of
    the (centred) segments, gives the pooled within-segment fit; None when the points span no
    steps at all. Below a metric's bound, a slope above the bound is more than one change."""
    sxx = sum(x * x for seg in segments for x, _ in seg)
    if sxx <= 0:
        return None
    worst = 0.0
    for seg in segments:
        # A step up before the k-th latest point adds `unit` to the points from it on: the
        # fit's numerator grows by their x sum (centred, so the largest is mid-segment).
        above = 0.0
        for x in sorted((x for x, _ in seg), reverse=True)[:-1]:
            above += x
            worst = max(worst, abs(above))
    return unit * worst / sxx


def slope_fits(metric: str, segments: Sequence[Sequence[tuple[float, float]]],
               max_slope: float, unit: float = 1.0) -> Verdict | None:
    """None when the segments are long enough for a slope to mean growth; otherwise the
    metric's `unknown` verdict, saying why (too few steps: one change would read as growth)."""
    single = one_step_slope(segments, unit)
    if single is not None and single <= max_slope:
        return None
    steps = sum(len(seg) for seg in segments)
    ev = {"points": steps, "segments": len(segments), "max_slope": max_slope, "unit": unit,
          "one_change_slope": None if single is None else round(single, 4)}
    why = (f"{steps} sample(s) spanning no steps" if single is None else
           f"{steps} sample(s) in {len(segments)} segment(s): a single change of {unit:g} "
           f"would read as {single:.3f} per step, above the bound {max_slope}")
    return Verdict(f"no_growth[{metric}]", UNKNOWN, ev,
                   f"too short to fit a slope of {metric}: {why}")


def trend_verdicts(samples: Sequence[Mapping[str, Any]],
                   trends: Mapping[str, tuple[str | None, float]] = TRENDS,
                   warmup: int = WARMUP_STEPS) -> list[Verdict]:
    """checks.no_growth for every trend metric, by the within-segment slope per step;
    `unknown`, with the reason, where too few samples or too few steps were taken for a slope
    above the bound to be more than a single change (slope_fits)."""
    out = []
    for metric, (segment, max_slope) in trends.items():
        segs = centred_segments(samples, metric, segment, warmup)
        pts = [p for seg in segs for p in seg]
        v = checks.no_growth(metric, pts, max_slope)
        if v.status != UNKNOWN:
            # A soak too short for its slope to mean growth is not judged by that slope.
            v = slope_fits(metric, segs, max_slope, UNITS.get(metric, 1.0)) or v
        v.evidence.update(segments=len(segs), segmented_by=segment or "the whole run",
                          warmup_samples=warmup, unit="per step, centred within each segment")
        out.append(v)
    return out
