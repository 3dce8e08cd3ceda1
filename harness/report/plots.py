"""The report's pictures, drawn with matplotlib and handed back as inline PNG data URIs so the
report is one file that opens offline: a timeline per scenario, and soak trend plots.
"""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.report.timeline import Timeline

OUTCOME_COLOURS = {"ok": "#4c9a4c", "fail": "#c0392b", "pending": "#9e9e9e"}
FAULT_COLOUR = "#5b8dd9"
INSTANT_COLOUR = "#d35400"
DPI = 90


def to_data_uri(fig: Figure, tight: bool = True) -> str:
    """The figure as an inline PNG. `tight` crops it to what is drawn, which draws it twice;
    a figure with fixed margins (the timelines) saves that second draw."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _process_series(tl: Timeline, samples: Sequence[dict[str, Any]] | None
                    ) -> list[tuple[float, int, int]]:
    # The ledger's samples (verdicts.json) are denser than the history's change events.
    if samples:
        return [(float(s["t"]), int(s.get("count", 0)), int(s.get("zombies", 0)))
                for s in samples if "t" in s]
    return tl.processes


def timeline_png(tl: Timeline, samples: Sequence[dict[str, Any]] | None = None) -> str:
    """Operations as bars per host, faults as bands (kills as lines), process counts below."""
    hosts = tl.hosts or ["(no host)"]
    span = max(tl.end, 1e-3)
    fig = Figure(figsize=(13, 1.6 + 0.45 * len(hosts) + 1.6))
    ops_ax, proc_ax = fig.subplots(2, 1, sharex=True,
                                   gridspec_kw={"height_ratios": [0.6 + 0.45 * len(hosts), 1.6]})
    min_w = span * 0.004        # operations of a few ms still show as a tick
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for op in tl.operations:
        y = hosts.index(op.host)
        end = op.end if op.end is not None else tl.host_exits.get(op.host, tl.end)
        width = max(end - op.start, min_w)
        bars.setdefault((y, op.outcome), []).append((op.start, width))
        if width > span * 0.06:
            ops_ax.text(op.start + width / 2, y, op.op, ha="center", va="center",
                        fontsize=8, color="white", clip_on=True)
    # One collection per host and outcome, not an artist per operation: with the second,
    # cropping draw gone too (below), 81 timelines take 9.4 core-s instead of 16.0.
    for (y, outcome), spans in bars.items():
        ops_ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=OUTCOME_COLOURS[outcome],
                           edgecolor="white", linewidth=0.5,
                           hatch="//" if outcome == "pending" else None)
    for host, t in tl.host_exits.items():
        if host in hosts:
            ops_ax.plot([t], [hosts.index(host)], marker="|", markersize=14, color="#333")
    for fault in tl.faults:
        for ax in (ops_ax, proc_ax):
            if fault.instant:
                ax.axvline(fault.start, color=INSTANT_COLOUR, linestyle="--", linewidth=1.2)
            else:
                ax.axvspan(fault.start, fault.end if fault.end is not None else tl.end,
                           color=FAULT_COLOUR, alpha=0.18,
                           hatch=None if fault.end is not None else "xx")
        ops_ax.annotate(fault.name, (fault.start, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, 2), textcoords="offset points", fontsize=8,
                        color=INSTANT_COLOUR if fault.instant else FAULT_COLOUR)
    if tl.call_done is not None:
        for ax in (ops_ax, proc_ax):
            ax.axvline(tl.call_done, color="#555", linestyle=":", linewidth=1)
        proc_ax.annotate("teardown", (tl.call_done, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, -10), textcoords="offset points", fontsize=8, color="#555")
    ops_ax.set_yticks(range(len(hosts)), hosts)
    ops_ax.set_ylim(-0.6, len(hosts) - 0.4)
    ops_ax.invert_yaxis()
    ops_ax.set_xlim(0, span * 1.01)
    ops_ax.grid(axis="x", alpha=0.3)
    ops_ax.legend(handles=[Patch(color=c, label=k) for k, c in OUTCOME_COLOURS.items()] +
                  [Patch(color=FAULT_COLOUR, alpha=0.3, label="fault active"),
                   Patch(color=INSTANT_COLOUR, label="kill / signal")],
                  loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    series = _process_series(tl, samples)
    if series:
        ts = [s[0] for s in series] + [span]
        proc_ax.step(ts, [s[1] for s in series] + [series[-1][1]], where="post",
                     color="#333", label="processes")
        proc_ax.step(ts, [s[2] for s in series] + [series[-1][2]], where="post",
                     color=OUTCOME_COLOURS["fail"], label="zombies")
        proc_ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
                       frameon=False)
    else:
        proc_ax.text(0.5, 0.5, "no process samples", transform=proc_ax.transAxes,
                     ha="center", va="center", color="#777")
    proc_ax.set_ylabel("processes", fontsize=9)
    proc_ax.set_ylim(bottom=0)
    proc_ax.grid(alpha=0.3)
    proc_ax.set_xlabel("seconds since the history opened", fontsize=9)
    # Fixed margins: room for the hosts' short names on the left and the legends on the
    # right. Cropping to the drawing (bbox_inches="tight") drew every timeline twice.
    fig.subplots_adjust(left=0.06, right=0.87, top=0.93, bottom=0.12, hspace=0.08)
    return to_data_uri(fig, tight=False)


def _png_or_error(job: tuple[Timeline, Sequence[dict[str, Any]] | None]
                  ) -> tuple[str | None, str | None]:
    try:
        return timeline_png(*job), None
    except Exception as exc:  # noqa: BLE001 - one undrawable timeline must not cost the report
        return None, repr(exc)


# Timelines per drawing process, at least: below that, starting a process (a Python with
# matplotlib, ~0.5 s of CPU) costs more than it saves.
PER_PROCESS = 8


def draw_timelines(jobs: Sequence[tuple[Timeline, Sequence[dict[str, Any]] | None]]
                   ) -> list[tuple[str | None, str | None]]:
    """(data URI, None) or (None, why it could not be drawn) per (timeline, ledger samples),
    in order. The report is written after the run's last scenario, so its drawing is the
    run's last serial step: 81 timelines are ~9 s of CPU (measured on 2 cores, 2026-11-30).
    It is spread over one process per core (spawned: the run's own process has threads),
    or drawn here when there are few, one core, or no process can be started."""
    workers = min(os.cpu_count() or 1, len(jobs) // PER_PROCESS)
    if workers >= 2:
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                     ) as pool:
                return list(pool.map(_png_or_error, jobs, chunksize=PER_PROCESS // 2))
        except (OSError, BrokenProcessPool):
            pass            # drawn here instead
    return [_png_or_error(job) for job in jobs]


def trend_pngs(rows: Sequence[dict[str, Any]], x_keys: Sequence[str] = ("t", "step", "iteration")
               ) -> dict[str, str]:
    """One small plot per numeric metric of a soak's samples, against the first x key found."""
    x_key = next((k for k in x_keys if rows and all(k in r for r in rows)), None)
    xs = [r[x_key] for r in rows] if x_key else list(range(len(rows)))
    metrics = sorted({k for r in rows for k, v in r.items()
                      if k != x_key and isinstance(v, (int, float)) and not isinstance(v, bool)})
    out = {}
    for metric in metrics:
        pts = [(x, r[metric]) for x, r in zip(xs, rows, strict=True) if metric in r]
        fig = Figure(figsize=(5.2, 2.2))
        ax = fig.subplots()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#333", linewidth=1.2,
                marker="." if len(pts) < 60 else None)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(x_key or "sample", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        out[metric] = to_data_uri(fig)
    return out
