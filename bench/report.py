"""The table (printed and in RESULTS.md) and the availability picture."""
from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from bench.figures import Row

COLOURS = {"200": "#2e7d32", "503": "#f9a825", "refused": "#c62828", "reset": "#6a1b9a", "hung": "#424242"}


_MET = {True: "yes", False: "**no**", None: ""}


def _cell(row: Row) -> str:
    if row.median is None:
        return f"never recovered ({len(row.values) - len(row.done)}/{len(row.values)} runs)"
    spread = f" ({row.done[0]:.2f}–{row.done[-1]:.2f})" if len(row.done) > 1 else ""
    return f"{row.median:.2f}{spread} {row.unit}".strip()


def table(rows: list[Row]) -> str:
    lines = ["| figure | peer | measure | median (min–max) | target | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.peer} | {r.metric} | {_cell(r)} | {r.target} | {_MET[r.met]} |" for r in rows]
    return "\n".join(lines)


def ratios(rows: list[Row]) -> list[str]:
    """Each launcher figure against its reference measured in the same run."""
    def med(figure: str, peer: str, metric_start: str = "") -> float | None:
        for r in rows:
            if r.figure == figure and r.peer == peer and r.metric.startswith(metric_start):
                return r.median
        return None

    out = []
    bare_cold, launcher_cold = med("4 cold start", "bare uvicorn"), med("4 cold start", "launcher (no prestart step)")
    if bare_cold and launcher_cold:
        out.append(f"cold start, launcher without prestart / bare uvicorn: {launcher_cold / bare_cold:.2f}")
    bare_rps, launcher_rps = med("6 throughput", "bare uvicorn"), med("6 throughput", "launcher")
    if bare_rps and launcher_rps:
        out.append(f"throughput, launcher / bare uvicorn: {launcher_rps / bare_rps:.3f}")
    crash, cold = med("3 child crash", "launcher", "kill"), bare_cold
    if crash and cold:
        out.append(f"child crash to 200, launcher / bare cold start: {crash / cold:.2f}")
    rss_l, rss_s = med("5 idle cost", "launcher", "RSS"), med("5 idle cost", "supervisord", "RSS")
    if rss_l and rss_s:
        out.append(f"idle RSS, launcher / supervisord: {rss_l / rss_s:.2f}")
    return out


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mariadb = subprocess.run(["/usr/sbin/mariadbd", "--version"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "fastapi", "sqlalchemy", "pymysql", "supervisor"))
    return (f"{platform.platform()}, {cpus} cores, Python {sys.version.split()[0]}; {versions}; {mariadb}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def write(rows: list[Row], timelines: dict[str, dict[str, list[tuple[float, str]]]], out: Path) -> str:
    text = "\n".join([
        "# Benchmark results", "", "Written by `python -m bench` (`./dev bench`); medians of 5 runs unless one.", "",
        f"Machine: {machine()}", "", table(rows), "", "Ratios against the reference measured in the same run:", "",
        *[f"- {line}" for line in ratios(rows)], "", "![availability](availability.png)", ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(text)
    if timelines:
        picture(timelines, out / "availability.png")
    return text


def picture(timelines: dict[str, dict[str, list[tuple[float, str]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(timelines), figsize=(7 * len(timelines), 4), squeeze=False)
    for ax, (title, peers) in zip(axes[0], timelines.items()):
        names = list(peers)
        for row, name in enumerate(names):
            points = peers[name]
            for (t, result), (t_next, _) in zip(points, points[1:] + [(points[-1][0] + 0.02, "")]):
                ax.barh(row, t_next - t, left=t, color=COLOURS.get(result, "#9e9e9e"), height=0.6, linewidth=0)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("seconds from the fault")
        ax.set_title(f"what a client of /api/health saw: {title}", fontsize=10)
        ax.invert_yaxis()
    fig.legend(handles=[Patch(color=c, label=k) for k, c in COLOURS.items()], loc="lower center", ncol=5)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
