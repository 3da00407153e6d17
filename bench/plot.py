#!/usr/bin/env python3
"""Plots the JSON written by bench/roundtrip.py --json and bench/output.py --json.

    .venv/bin/python bench/plot.py [RESULTS.json ...] [--out docs/img]
    .venv/bin/python bench/plot.py bench/results/latest.json --markdown   # the tables, for the docs

With no file named, reads bench/results/latest.json and bench/results/output-latest.json (those
that exist). From a roundtrip.py file it writes <out>/roundtrip.png (p50 and p99 round trip of
`1+1` per method, log-scale y), <out>/session_start.png (p50 and p90 time to a ready session that
answered `1+1`, log-scale y) and <out>/isolation.png (round trip and session start with the
isolation layers ON and OFF: p50, p90, p99); from an output.py file, <out>/output.png (stdout
flood MB/s per shape and method, the figure cell's p50/p90 per method, the backend's ru_maxrss
growth under a 1 GB flood against the cap). Each plot only when its section is in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parent.parent
COLORS = {
    "pipe": "#9e9e9e",
    "pipe_same": "#c7c7c7",
    "pipe_cross": "#7a7a7a",
    "exec": "#4c78a8",
    "sandbox": "#f58518",
    "sandbox_async": "#e45756",
    "run_once": "#ffbf79",
    "jupyter": "#54a24b",
}
SHORT = {
    "roundtrip": {
        "pipe": "pipe ping-pong\n(floor)",
        "pipe_same": "pipe, pinned\n1 CPU",
        "pipe_cross": "pipe, pinned\n2 CPUs",
        "exec": "in-process\nexec()",
        "sandbox": "sandbox_exec\nsession.run",
        "sandbox_async": "sandbox_exec\nawait run_async",
        "jupyter": "Jupyter kernel\n(ipykernel)",
    },
    "session_start": {
        "sandbox": "sandbox_exec\nbox.session + run",
        "run_once": "sandbox_exec.run\n(fresh each call)",
        "jupyter": "Jupyter\nstart_kernel + run",
    },
}


def fmt(value: float, unit: str) -> str:
    small, big = ("µs", "ms") if unit == "us" else ("ms", "s")
    if value >= 1000:
        return f"{value / 1000:.2f} {big}"
    return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2}f} {small}"


def bars(ax, rows: dict, section: str, stats: tuple[str, str], unit: str) -> None:
    names = list(rows)
    width = 0.38
    for j, stat in enumerate(stats):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        vals = [rows[n][stat] for n in names]
        colors = [COLORS.get(n, "#888888") for n in names]
        rects = ax.bar(
            xs,
            vals,
            width,
            color=colors,
            alpha=1.0 if j == 0 else 0.5,
            edgecolor="black",
            linewidth=0.6,
            hatch=None if j == 0 else "//",
            label=stat,
        )
        for rect, v in zip(rects, vals):
            ax.annotate(
                fmt(v, unit),
                (rect.get_x() + rect.get_width() / 2, v),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([SHORT[section].get(n, n) + f"\n(n={rows[n]['n']})" for n in names], fontsize=8.5)
    ax.set_yscale("log")
    lo = min(rows[n][stats[0]] for n in names)
    hi = max(rows[n][s] for n in names for s in stats)
    ax.set_ylim(lo / 3, hi * 4)
    ax.set_ylabel("µs (log scale)" if unit == "us" else "ms (log scale)")
    ax.grid(axis="y", which="major", alpha=0.4)
    ax.grid(axis="y", which="minor", alpha=0.12)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(facecolor="white", edgecolor="black", label=stats[0]),
            Patch(facecolor="white", edgecolor="black", hatch="//", label=stats[1]),
        ],
        loc="upper left",
        fontsize=8.5,
    )


def subtitle(doc: dict) -> str:
    m = doc.get("machine", {})
    return (
        f"{doc.get('date', '')[:16].replace('T', ' ')} · {m.get('cpus')} × {m.get('cpu_model', '')} · "
        f"Python {m.get('versions', {}).get('python', '')}\n{m.get('os', '')} (a shared, noisy machine)"
    )


def markdown(doc: dict) -> str:
    """The result tables as Markdown, as docs/benchmarks.md quotes them."""
    lines = []
    rt = doc.get("roundtrip") or {}
    if rt:
        lines += ["| method | n | p50 | p90 | p99 | mean | min |", "|---|--:|--:|--:|--:|--:|--:|"]
        for r in rt.values():
            lines.append(
                f"| {r['label']} | {r['n']} | "
                + " | ".join(fmt(r[k], "us") for k in ("p50", "p90", "p99", "mean", "min"))
                + " |"
            )
        lines.append("")
    st = doc.get("session_start") or {}
    if st:
        lines += [
            "| method | n | p50 | p90 | mean | min | max | teardown p50 (not included) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in st.values():
            tear = fmt(r["teardown"]["p50"], "ms") if "teardown" in r else "(included)"
            lines.append(
                f"| {r['label']} | {r['n']} | "
                + " | ".join(fmt(r[k], "ms") for k in ("p50", "p90", "mean", "min", "max"))
                + f" | {tear} |"
            )
        lines.append("")
    ratios = doc.get("ratios") or {}
    if ratios:
        lines += ["| ratio | p50 | p99 / p90 | mean |", "|---|--:|--:|--:|"]
        for key, v in ratios.items():
            second = v.get("p99", v.get("p90"))
            cells = [f"{x:g}×" if x is not None else "–" for x in (v.get("p50"), second, v.get("mean"))]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    iso = doc.get("isolation") or {}
    for part in ("roundtrip", "start"):
        rows = iso.get(part) or {}
        if not rows:
            continue
        unit = next(iter(rows.values()))["unit"]
        lines += [
            f"| isolation: {'round trip of 1+1' if part == 'roundtrip' else 'session start + 1+1'} "
            "| n | p50 | p90 | p99 | mean | min |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in rows.values():
            lines.append(
                f"| {r['label']} | {r['n']} | "
                + " | ".join(fmt(r[k], unit) for k in ("p50", "p90", "p99", "mean", "min"))
                + " |"
            )
        v = (iso.get("ratios") or {}).get(part)
        if v:
            lines.append(
                f"| **ratio ON/OFF** | | **{v['p50']:g}×** | {v['p90']:g}× | {v['p99']:g}× | {v['mean']:g}× | |"
            )
            lines.append(
                f"| p50 difference ON − OFF | | {'+' if v['p50_difference'] >= 0 else '−'}"
                f"{fmt(abs(v['p50_difference']), unit)} | | | | |"
            )
        lines.append("")
    if doc.get("kind") == "output":
        lines.append(markdown_output(doc))
    return "\n".join(lines).rstrip() + "\n"


def markdown_output(doc: dict) -> str:
    lines: list[str] = []
    flood = doc.get("flood") or {}
    if flood:
        lines += [
            "| flood | method | bytes | n | time p50 | MB/s (p50) | MB/s (best) | vs in-process |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for shape, f in flood.items():
            exec_rate = (f["methods"].get("exec") or {}).get("mb_s")
            for name, r in f["methods"].items():
                rel = f"{r['mb_s'] / exec_rate:.0%}" if exec_rate else "–"
                bold = "**" if name == "sandbox" else ""
                lines.append(
                    f"| {shape} | {bold}{r['label']}{bold} | {r['bytes']:,} | {r['n']} | "
                    f"{r['time_s']['p50'] * 1e3:.1f} ms | {bold}{r['mb_s']:,.0f}{bold} | {r['mb_s_best']:,.0f} | "
                    f"{bold}{rel}{bold} |"
                )
                if "core_mb_s" in r:
                    lines.append(
                        f"| {shape} | (same, core clock: Result.duration_s) | | | "
                        f"{r['core_time_s_p50'] * 1e3:.1f} ms | {r['core_mb_s']:,.0f} | | |"
                    )
        lines.append("")
    fig = doc.get("figure") or {}
    rows = fig.get("methods") or {}
    if rows:
        lines += [
            "| figure cell | n | p50 | p90 | p99 | mean | min | png (base64 chars) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in rows.values():
            lines.append(
                f"| {r['label']} | {r['n']} | "
                + " | ".join(fmt(r[k], "ms") for k in ("p50", "p90", "p99", "mean", "min"))
                + f" | {r['png_base64_chars']:,} |"
            )
        for k, v in (fig.get("ratios") or {}).items():
            lines.append(f"| ratio {k} | | {v['p50']:g}× | {v['p90']:g}× | | {v['mean']:g}× | | |")
        lines.append("")
    rss = doc.get("rss") or {}
    if rss.get("shapes"):
        mib = 1 << 20
        lines += [
            "| 1 GB flood, cap 16 MiB | written | ru_maxrss before | after | growth | limit (cap + slack) | time | met |",
            "|---|--:|--:|--:|--:|--:|--:|---|",
        ]
        for shape, d in rss["shapes"].items():
            lines.append(
                f"| {shape} | {d['bytes_written'] / 1e9:.2f} GB | {d['maxrss_before'] / mib:.1f} MiB | "
                f"{d['maxrss_after'] / mib:.1f} MiB | **{d['growth_bytes'] / mib:.1f} MiB** | "
                f"{d['limit_bytes'] / mib:.0f} MiB | {d['elapsed_s']:.2f} s | {'yes' if d['met'] else '**no**'} |"
            )
        lines.append("")
    return "\n".join(lines)


ON_OFF_COLORS = {"on": "#f58518", "off": "#4c78a8"}


def plot_isolation(doc: dict, out: Path) -> Path | None:
    iso = doc.get("isolation") or {}
    parts = [p for p in ("roundtrip", "start") if len(iso.get(p) or {}) == 2]
    if not parts:
        return None
    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 4.8), dpi=120, squeeze=False)
    stats = ("p50", "p90", "p99")
    for ax, part in zip(axes[0], parts):
        rows = iso[part]
        unit = rows["on"]["unit"]
        width = 0.38
        for j, which in enumerate(("on", "off")):
            xs = [i + (j - 0.5) * width for i in range(len(stats))]
            vals = [rows[which][s] for s in stats]
            rects = ax.bar(
                xs,
                vals,
                width,
                color=ON_OFF_COLORS[which],
                edgecolor="black",
                linewidth=0.6,
                label=f"layers {which.upper()} (n={rows[which]['n']})",
            )
            for rect, v in zip(rects, vals):
                ax.annotate(
                    fmt(v, unit),
                    (rect.get_x() + rect.get_width() / 2, v),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                )
        ratios = (iso.get("ratios") or {}).get(part) or {}
        ax.set_xticks(range(len(stats)))
        ax.set_xticklabels([f"{s}\nON/OFF {ratios.get(s, float('nan')):g}×" for s in stats], fontsize=8.5)
        hi = max(rows[w][s] for w in rows for s in stats)
        lo = min(rows[w][s] for w in rows for s in stats)
        if hi / lo > 8:  # a p99 far out (a noisy machine): log scale, or the p50s become invisible
            ax.set_yscale("log")
            ax.set_ylim(lo / 2, hi * 4)
            ax.set_ylabel("µs (log scale)" if unit == "us" else "ms (log scale)")
        else:
            ax.set_ylim(0, hi * 1.18)
            ax.set_ylabel("µs" if unit == "us" else "ms")
        ax.grid(axis="y", alpha=0.35)
        ax.legend(loc="upper left", fontsize=8)
        what = "Round trip of `1+1`, warm session" if part == "roundtrip" else "Session start + `1+1`"
        diff = ratios.get("p50_difference")
        ax.set_title(
            f"{what}\np50 cost of the layers: {'+' if (diff or 0) >= 0 else '−'}{fmt(abs(diff or 0), unit)}",
            fontsize=9.5,
        )
    fig.suptitle(
        "Cost of isolation · ON: Policy() · OFF: "
        + (iso.get("policies") or {}).get("off", "")
        + "\n"
        + subtitle(doc).replace("\n", " · "),
        fontsize=8.5,
    )
    fig.tight_layout()
    path = out / "isolation.png"
    fig.savefig(path)
    plt.close(fig)
    return path


FLOOD_COLORS = {"sandbox": "#f58518", "exec": "#4c78a8", "jupyter": "#54a24b"}
FLOOD_SHORT = {"sandbox": "sandbox_exec", "exec": "in-process", "jupyter": "Jupyter"}


def plot_output(doc: dict, out: Path) -> Path | None:
    flood = doc.get("flood") or {}
    fig_rows = (doc.get("figure") or {}).get("methods") or {}
    rss = (doc.get("rss") or {}).get("shapes") or {}
    panels = [p for p, present in (("flood", flood), ("figure", fig_rows), ("rss", rss)) if present]
    if not panels:
        return None
    widths = {"flood": 1.5, "figure": 1.0, "rss": 0.8}
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(sum(4.6 * widths[p] for p in panels), 5.2),
        dpi=120,
        squeeze=False,
        gridspec_kw={"width_ratios": [widths[p] for p in panels]},
    )
    for ax, panel in zip(axes[0], panels):
        if panel == "flood":
            shapes = list(flood)
            methods = [m for m in ("sandbox", "exec", "jupyter") if any(m in flood[s]["methods"] for s in shapes)]
            width = 0.8 / len(methods)
            for j, m in enumerate(methods):
                for i, s in enumerate(shapes):
                    r = flood[s]["methods"].get(m)
                    if not r:
                        continue
                    x = i + (j - (len(methods) - 1) / 2) * width
                    ax.bar(
                        x,
                        r["mb_s"],
                        width,
                        color=FLOOD_COLORS[m],
                        edgecolor="black",
                        linewidth=0.6,
                        label=FLOOD_SHORT[m] if i == 0 else None,
                    )
                    ax.annotate(
                        f"{r['mb_s']:,.0f}\n({r['bytes'] / 1e6:.0f} MB)",
                        (x, r["mb_s"]),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
                    if m == "exec":  # the 50 % of in-process mark, across the group
                        ax.hlines(r["mb_s"] / 2, i - 0.42, i + 0.42, colors="#4c78a8", linestyles=":", linewidth=1.2)
            ax.axhline(1000, color="#d62728", linestyle="--", linewidth=1)
            ax.text(
                len(shapes) - 0.5,
                1000 * 1.12,
                "target: ≥ 1 GB/s, or ≥ 50 % of in-process (dotted)",
                color="#d62728",
                fontsize=7.5,
                ha="right",
                va="bottom",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
            ax.set_yscale("log")
            hi = max(r["mb_s"] for s in shapes for r in flood[s]["methods"].values())
            lo = min(r["mb_s"] for s in shapes for r in flood[s]["methods"].values())
            ax.set_ylim(lo / 3, max(hi, 1000) * 5)
            ax.set_xlim(-0.5, len(shapes) - 0.5)
            ax.set_xticks(range(len(shapes)))
            labels = []
            for s in shapes:
                t = flood[s].get("target") or {}
                labels.append(
                    f"{s}: {flood[s]['label']}\nsandbox/in-process {flood[s]['ratios'].get('sandbox/exec', float('nan')):.0%}"
                    + (f" · target {'met' if t.get('met') else 'not met'}" if t else "")
                )
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_ylabel("MB/s at the median time (log scale; 1 MB = 10⁶ B)")
            ax.legend(loc="upper left", fontsize=8)
            ax.grid(axis="y", which="major", alpha=0.35)
            ax.set_title("stdout flood (Jupyter: a 5× smaller flood)", fontsize=9.5)
        elif panel == "figure":
            names = list(fig_rows)
            width = 0.38
            for j, stat in enumerate(("p50", "p90")):
                xs = [i + (j - 0.5) * width for i in range(len(names))]
                vals = [fig_rows[n][stat] for n in names]
                rects = ax.bar(
                    xs,
                    vals,
                    width,
                    color=[FLOOD_COLORS[n] for n in names],
                    edgecolor="black",
                    linewidth=0.6,
                    alpha=1.0 if j == 0 else 0.5,
                    hatch=None if j == 0 else "//",
                )
                for rect, v in zip(rects, vals):
                    ax.annotate(
                        fmt(v, "ms"),
                        (rect.get_x() + rect.get_width() / 2, v),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7.5,
                    )
            t = (doc.get("figure") or {}).get("target")
            from matplotlib.lines import Line2D
            from matplotlib.patches import Patch

            handles = [
                Patch(facecolor="white", edgecolor="black", label="p50"),
                Patch(facecolor="white", edgecolor="black", hatch="//", label="p90"),
            ]
            if "exec" in fig_rows:
                limit = fig_rows["exec"]["p50"] * 1.10
                ax.axhline(limit, color="#d62728", linestyle="--", linewidth=1)
                handles.append(
                    Line2D(
                        [],
                        [],
                        color="#d62728",
                        linestyle="--",
                        linewidth=1,
                        label=f"target: sandbox p50 ≤ 1.1 × in-process p50 "
                        f"({'met' if t and t['met'] else 'not met'}: "
                        f"{t['measured_ratio'] if t else float('nan'):g}×)",
                    )
                )
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([FLOOD_SHORT[n] + f"\n(n={fig_rows[n]['n']})" for n in names], fontsize=8.5)
            ax.set_ylim(0, max(fig_rows[n]["p90"] for n in names) * 1.45)
            ax.set_ylabel("ms")
            ax.legend(handles=handles, loc="upper left", fontsize=7.5)
            ax.grid(axis="y", alpha=0.35)
            ax.set_title("figure cell → image/png\n`fig, ax = plt.subplots(); ax.plot(range(1000)); `", fontsize=9.5)
        else:
            mib = 1 << 20
            shapes = list(rss)
            vals = [rss[s]["growth_bytes"] / mib for s in shapes]
            rects = ax.bar(range(len(shapes)), vals, 0.55, color="#f58518", edgecolor="black", linewidth=0.6)
            for rect, v, s in zip(rects, vals, shapes):
                ax.annotate(
                    f"+{v:.1f} MiB\n{'met' if rss[s]['met'] else 'not met'}",
                    (rect.get_x() + rect.get_width() / 2, v),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                )
            d0 = next(iter(rss.values()))
            cap, limit = d0["cap_bytes"] / mib, d0["limit_bytes"] / mib
            ax.set_xlim(-0.5, len(shapes) - 0.5)
            ax.axhline(cap, color="black", linestyle=":", linewidth=1)
            ax.text(len(shapes) - 0.52, cap, f"cap {cap:g} MiB", fontsize=7.5, va="bottom", ha="right")
            ax.axhline(limit, color="#d62728", linestyle="--", linewidth=1)
            ax.text(
                len(shapes) - 0.52,
                limit,
                f"target: < cap + {limit - cap:g} MiB",
                color="#d62728",
                fontsize=7.5,
                va="bottom",
                ha="right",
            )
            ax.set_xticks(range(len(shapes)))
            ax.set_xticklabels([f"{s}\n{rss[s]['bytes_written'] / 1e9:.2f} GB" for s in shapes], fontsize=8.5)
            ax.set_ylim(0, max(max(vals), limit) * 1.3)
            ax.set_ylabel("backend ru_maxrss growth, MiB")
            ax.grid(axis="y", alpha=0.35)
            ax.set_title("backend memory, 1 GB flood\n(fresh process each)", fontsize=9.5)
    fig.suptitle("Output: sandbox_exec vs in-process vs Jupyter · " + subtitle(doc).replace("\n", " · "), fontsize=8.5)
    fig.tight_layout()
    path = out / "output.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def default_inputs() -> list[str]:
    names = [REPO / "bench/results/latest.json", REPO / "bench/results/output-latest.json"]
    return [str(p) for p in names if p.exists()] or [str(names[0])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "json",
        nargs="*",
        help="results of bench/roundtrip.py --json or bench/output.py --json (default "
        "bench/results/latest.json and bench/results/output-latest.json)",
    )
    p.add_argument("--out", default=str(REPO / "docs/img"), help="output directory (default docs/img)")
    p.add_argument("--markdown", action="store_true", help="print the result tables as Markdown; no plots")
    args = p.parse_args(argv)
    inputs = args.json or default_inputs()
    docs = [(name, json.loads(Path(name).read_text())) for name in inputs]
    if args.markdown:
        for name, doc in docs:
            print(f"<!-- {name} -->\n{markdown(doc)}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in docs:
        found = plot_one(doc, out)
        if not found:
            print(f"{name}: no results to plot", file=sys.stderr)
        written += found
    if not written:
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def plot_hostile(doc: dict[str, Any], out: Path) -> Path | None:
    """bench/hostile.py: a bystander's round trip per phase, and the backend's CPU."""
    phases = [p for p in ("idle", "shapes", "bell") if p in doc]
    if not phases:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5), dpi=120)
    x = range(len(phases))
    for offset, stat, color in ((-0.2, "p50_us", "#1f77b4"), (0.2, "p99_us", "#ff7f0e")):
        values = [doc[p][stat] for p in phases]
        ax.bar([i + offset for i in x], values, width=0.4, color=color, label=stat.split("_")[0])
        for i, v in zip(x, values):
            ax.text(i + offset, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), ["idle", "bad message shapes", "doorbell spam"][: len(phases)])
    ax.set_ylabel("bystander 1+1 round trip (µs)")
    ax.legend()
    ax.set_title("Another session's 1+1 while a hostile session attacks", fontsize=9.5)
    cpu = [doc[p].get("backend_cpu_per_s_attack_alone", 0.0) for p in phases]
    ax2.bar(list(x), cpu, color="#2ca02c")
    for i, v in zip(x, cpu):
        ax2.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(list(x), ["idle", "bad message shapes", "doorbell spam"][: len(phases)])
    ax2.set_ylabel("backend CPU-seconds per second (attack alone)")
    ax2.set_ylim(0, 1.2)
    ax2.set_title("The backend's CPU during the attack", fontsize=9.5)
    fig.tight_layout()
    path = out / "hostile.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_one(doc: dict[str, Any], out: Path) -> list[Path]:
    written = []
    if doc.get("kind") == "hostile":
        hostile = plot_hostile(doc, out)
        return [hostile] if hostile else []

    rt = doc.get("roundtrip") or {}
    if rt:
        fig, ax = plt.subplots(figsize=(4 + 1.3 * len(rt), 5), dpi=120)
        bars(ax, rt, "roundtrip", ("p50", "p99"), "us")
        target = (doc.get("target") or {}).get("p50_us_max")
        if target and "sandbox" in rt:
            ax.axhline(target, color="#d62728", linestyle="--", linewidth=1)
            met = doc["target"]["met"]
            ax.text(
                -0.45,
                target * 1.08,
                f"target: sandbox_exec p50 ≤ {target:g} µs ({'met' if met else 'not met'})",
                color="#d62728",
                ha="left",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(
            f"Round trip of `{doc.get('cell', '1+1')}` (execute_result back in the caller)\n" + subtitle(doc),
            fontsize=9.5,
        )
        fig.tight_layout()
        path = out / "roundtrip.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    st = doc.get("session_start") or {}
    if st:
        fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
        bars(ax, st, "session_start", ("p50", "p90"), "ms")
        ax.set_title(
            f"Session start: nothing → a session that answered `{doc.get('cell', '1+1')}`\n" + subtitle(doc),
            fontsize=9.5,
        )
        fig.tight_layout()
        path = out / "session_start.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    for plot in (plot_isolation, plot_output):
        path = plot(doc, out)
        if path is not None:
            written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())
