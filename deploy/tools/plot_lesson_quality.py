#!/usr/bin/env python3
"""Draws the "Lesson quality" dashboard's figures from real /metrics scrapes.

Grafana cannot be installed on the build machine, so this renders the same
queries the dashboard (deploy/grafana/dashboards/lesson-quality.json) runs,
computed the way Prometheus computes them (histogram_quantile over the
increase of the buckets in a sliding window), from a series of scrapes of a
gateway during a lesson with real media:

    CHAPERONE_METRICS_SERIES=/tmp/series \\
        cargo nextest run -p chaperone-gateway --test metrics_lesson a_lesson_fills
    python3 deploy/tools/plot_lesson_quality.py /tmp/series docs/screenshots/lesson-quality.png

Needs matplotlib (pip install matplotlib).
"""

import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')
WINDOW_S = 10.0  # the sliding window of rate()/increase()


def parse(path):
    """One scrape: {(name, frozenset(labels)): value}."""
    out = {}
    with open(path) as f:
        for line in f:
            m = SERIES.match(line.strip())
            if not m:
                continue
            name, labels, value = m.groups()
            labels = frozenset(LABEL.findall(labels or ""))
            out[(name, labels)] = float(value)
    return out


def load(directory):
    scrapes = []
    for name in sorted(os.listdir(directory)):
        m = re.match(r"scrape-(\d+)\.prom$", name)
        if m:
            scrapes.append((int(m.group(1)) / 1000.0, parse(os.path.join(directory, name))))
    if len(scrapes) < 2:
        sys.exit(f"{directory}: need at least two scrapes")
    return scrapes


def buckets(scrape, name, match):
    """[(le, cumulative count)] of a histogram's series matching `match`."""
    out = {}
    for (n, labels), v in scrape.items():
        if n != name + "_bucket":
            continue
        d = dict(labels)
        if any(d.get(k) != want for k, want in match.items()):
            continue
        le = float("inf") if d["le"] == "+Inf" else float(d["le"])
        out[le] = out.get(le, 0.0) + v
    return sorted(out.items())


def quantile(q, bs):
    """Prometheus's histogram_quantile over [(le, count)] (cumulative)."""
    if not bs or bs[-1][1] <= 0:
        return math.nan
    total = bs[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in bs:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return bs[-2][0] if len(bs) > 1 else math.nan


def series(scrapes, name, q, match=None):
    """histogram_quantile(q, sum by (le) (increase(name_bucket[WINDOW]))) over time."""
    match = match or {}
    xs, ys = [], []
    for i, (t, now) in enumerate(scrapes):
        past = next((s for (tt, s) in scrapes[: i + 1] if t - tt <= WINDOW_S), None)
        if past is None or past is now:
            continue
        a, b = dict(buckets(past, name, match)), buckets(now, name, match)
        inc = [(le, max(0.0, c - a.get(le, 0.0))) for le, c in b]
        xs.append(t)
        ys.append(quantile(q, inc))
    return xs, ys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    scrapes = load(sys.argv[1])
    plt.style.use("dark_background")
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), constrained_layout=True)
    fig.patch.set_facecolor("#111217")
    colours = {"p50": "#73bf69", "p95": "#f2cc0c", "p99": "#f2495c", "uplink": "#5794f2", "downlink": "#ff9830"}

    def panel(ax, title, lines, unit, scale=1.0):
        ax.set_facecolor("#181b1f")
        for label, (xs, ys), colour in lines:
            ax.plot(xs, [y * scale for y in ys], label=label, color=colour, linewidth=1.8, marker=".", markersize=3)
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_xlabel("seconds into the lesson", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(color="#2c3235", linewidth=0.6)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="upper right")

    qs = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)]
    panel(axes[0][0], "Join time (token presented → first media delivered)",
          [(n, series(scrapes, "chaperone_join_seconds", q), colours[n]) for n, q in qs], "ms", 1000)
    panel(axes[0][1], "Forwarding latency inside the SFU",
          [(n, series(scrapes, "chaperone_forwarding_latency_seconds", q), colours[n]) for n, q in qs], "µs", 1e6)
    panel(axes[0][2], "Control enforcement (teacher's command → SFU applied)",
          [(n, series(scrapes, "chaperone_control_enforcement_seconds", q), colours[n]) for n, q in qs], "µs", 1e6)
    panel(axes[1][0], "Packet loss p95 (RTCP, per track)",
          [(p, series(scrapes, "chaperone_media_loss_ratio", 0.95, {"path": p}), colours[p]) for p in ("uplink", "downlink")],
          "%", 100)
    panel(axes[1][1], "Jitter p95 (RTCP, per track)",
          [(p, series(scrapes, "chaperone_media_jitter_seconds", 0.95, {"path": p}), colours[p]) for p in ("uplink", "downlink")],
          "ms", 1000)
    panel(axes[1][2], "Round-trip time p50 (RTCP, per track)",
          [(p, series(scrapes, "chaperone_media_rtt_seconds", 0.5, {"path": p}), colours[p]) for p in ("uplink", "downlink")],
          "ms", 1000)
    span = scrapes[-1][0] - scrapes[0][0]
    fig.suptitle(
        f"Chaperone — Lesson quality: {len(scrapes)} scrapes of a gateway over {span:.0f} s "
        f"(the metrics test: str0m WebRTC clients on loopback, 51 pupils joining and leaving, debug build on 2 shared cores; "
        f"quantiles over {WINDOW_S:.0f} s windows)",
        fontsize=10, x=0.01, ha="left")
    fig.savefig(sys.argv[2], dpi=110, facecolor=fig.get_facecolor())
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
