#!/usr/bin/env python3
"""Verdict and SVG plot for scripts/soak.sh's CSV (RSS and open fds of watch and serve).

Written without plotting libraries so the soak needs nothing but Python's standard library:
two panels (RSS in MiB, open fds) over time, one line per process, warm-up shaded.

Verdict: after warm-up, every RSS sample stays within 5 % of the first post-warm-up sample,
and the last fd count is not above the first post-warm-up one. Exit status 1 when it fails.
"""

import argparse
import csv
import sys

PROCS = ("watch", "serve")
COLOURS = {"watch": "#1f77b4", "serve": "#d62728"}


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        sys.exit(f"{path}: fewer than 2 samples; run the soak for longer")
    return [{k: float(v) for k, v in r.items()} for r in rows]


def verdict(rows, warmup):
    after = [r for r in rows if r["seconds"] >= warmup] or rows[-1:]
    lines, ok = [], True
    for p in PROCS:
        base = after[0][f"{p}_rss_kib"]
        hi = max(r[f"{p}_rss_kib"] for r in after)
        lo = min(r[f"{p}_rss_kib"] for r in after)
        end = after[-1][f"{p}_rss_kib"]
        drift = max(hi - base, base - lo) / base if base else float("inf")
        fd0, fd1 = after[0][f"{p}_fds"], after[-1][f"{p}_fds"]
        fd_max = max(r[f"{p}_fds"] for r in after)
        good = drift <= 0.05 and fd1 <= fd0
        ok &= good
        lines.append(
            f"| {p} | {rows[0][f'{p}_rss_kib'] / 1024:.1f} | {base / 1024:.1f} | "
            f"{end / 1024:.1f} | {drift * 100:.1f} % | {fd0:.0f} -> {fd1:.0f} (max {fd_max:.0f}) | "
            f"{'PASS' if good else 'FAIL'} |"
        )
    head = [
        f"Soak of {rows[-1]['seconds']:.0f} s, warm-up {warmup} s, {len(rows)} samples.",
        "",
        "| process | RSS first (MiB) | RSS after warm-up | RSS end | max drift after warm-up "
        "| fds after warm-up -> end | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    return ok, head + lines


def svg(rows, warmup, note):
    w, h, ml, mr, mt, gap, ph = 900, 560, 70, 110, 40, 60, 200
    t_max = max(r["seconds"] for r in rows) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{ml}" y="20" font-size="14">dishcam soak: {note}</text>',
    ]
    panels = (("RSS (MiB)", "rss_kib", 1 / 1024), ("open fds", "fds", 1))
    for i, (label, key, scale) in enumerate(panels):
        top = mt + i * (ph + gap)
        vals = [r[f"{p}_{key}"] * scale for r in rows for p in PROCS]
        lo, hi = 0.0, max(vals) * 1.15 or 1

        def x(t):
            return ml + (w - ml - mr) * t / t_max

        def y(v, top=top, lo=lo, hi=hi):
            return top + ph - ph * (v - lo) / (hi - lo)

        out.append(f'<rect x="{ml}" y="{top}" width="{x(min(warmup, t_max)) - ml:.1f}" height="{ph}" fill="#eee"/>')
        out.append(f'<rect x="{ml}" y="{top}" width="{w - ml - mr}" height="{ph}" fill="none" stroke="black"/>')
        mid = top + ph / 2
        out.append(f'<text x="15" y="{mid}" transform="rotate(-90 15 {mid})" text-anchor="middle">{label}</text>')
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            out.append(f'<text x="{ml - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
            out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        for k in range(6):
            t = t_max * k / 5
            out.append(f'<text x="{x(t):.1f}" y="{top + ph + 15}" text-anchor="middle">{t / 60:.0f} min</text>')
        for j, p in enumerate(PROCS):
            pts = " ".join(f"{x(r['seconds']):.1f},{y(r[f'{p}_{key}'] * scale):.1f}" for r in rows)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{COLOURS[p]}" stroke-width="1.5"/>')
            out.append(f'<text x="{w - mr + 10}" y="{top + 20 + 16 * j}" fill="{COLOURS[p]}">{p}</text>')
        if i == 0:
            out.append(f'<text x="{ml + 4}" y="{top + 14}" fill="#777">warm-up</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--warmup", type=float, default=300)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    rows = load(a.csv)
    ok, lines = verdict(rows, a.warmup)
    with open(a.svg, "w") as f:
        f.write(svg(rows, a.warmup, a.note))
    print("\n".join(lines))
    print(f"\n{a.note}\n\nverdict: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
