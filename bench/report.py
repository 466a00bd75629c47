"""The table (printed and in RESULTS.md) and the availability picture."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench import venvs
from bench.figures import Row

COLOURS = {"200": "#2e7d32", "503": "#f9a825", "refused": "#c62828", "reset": "#6a1b9a", "hung": "#424242"}


_MET = {True: "yes", False: "**no**", None: ""}
LAUNCHERS = ("launcher", "launcher (restart)", "launcher (swap)", "launcher (swap, 2 workers)", "launcher (2 workers)")
SWAP = ("launcher (swap)", "launcher (swap, 2 workers)")  # the default policy, at 1 and 2 workers
DEFAULT = ("launcher (default policy)", "launcher (default policy, 2 workers)")
GUNICORN, PRELOAD = "gunicorn -w 2 (uvicorn_worker)", "gunicorn -w 2 --preload (uvicorn_worker)"
GUNICORN_1 = "gunicorn -w 1 (uvicorn_worker)"
Lookup = Callable[[str, str, str], float | None]


@dataclass(frozen=True)
class Target:
    """A goal for some rows, judged against the rows of the same run."""

    figure: str
    peers: tuple[str, ...]
    metric: str  # the start of the row's measure
    text: str
    met: Callable[[Row, Lookup], bool]


def _below(limit: float) -> Callable[[Row, Lookup], bool]:
    return lambda row, med: row.median is not None and row.median <= limit


def _vs(figure: str, peer: str, metric: str, test: Callable[[float, float], bool]) -> Callable[[Row, Lookup], bool]:
    def met(row: Row, med: Lookup) -> bool:
        other = med(figure, peer, metric)
        return row.median is not None and other is not None and test(row.median, other)

    return met


def _never(row: Row, med: Lookup) -> bool:
    return bool(row.done) and len(row.done) == len(row.values) and max(row.done) == 0


def _memory(row: Row, med: Lookup) -> bool:
    plain, preload, uvicorn = (med("10 memory", p, "") for p in (GUNICORN, PRELOAD, "uvicorn --workers 2"))
    v = row.median
    if v is None or plain is None or preload is None or uvicorn is None:
        return False
    return v < plain and v < uvicorn and v <= 1.15 * preload


TARGETS = [
    Target(
        "4 cold start",
        ("launcher", "launcher (no prestart step)"),
        "",
        "<= bare uvicorn + 0.3 s",
        _vs("4 cold start", "bare uvicorn", "", lambda v, bare: v <= bare + 0.3),
    ),
    Target("3 child crash", ("launcher",), "kill", "<= 0.15 s (the only worker)", _below(0.15)),
    Target("3 child crash", ("launcher",), "refused", "0", _never),
    Target(
        "1 recovery",
        SWAP,
        "MySQL back",
        "<= 0.3 s and <= supervisord",
        _vs("1 recovery", "supervisord + uvicorn", "MySQL back", lambda v, s: v <= 0.3 and v <= s),
    ),
    Target("1 recovery", ("launcher (restart)",), "MySQL back", "<= 0.3 s (its workers start anew)", _below(0.3)),
    Target("1 recovery", SWAP, "/api/test", ">= 99 %", lambda row, med: row.median is not None and row.median >= 99),
    Target(
        "1d long outage", DEFAULT, "/api/test", ">= 99 %", lambda row, med: row.median is not None and row.median >= 99
    ),
    Target("2 detection", LAUNCHERS, "", "<= 2 s", _below(2.0)),
    Target(
        "1b late boot",
        LAUNCHERS,
        "",
        "<= 0.3 s and <= supervisord",
        _vs("1b late boot", "supervisord + uvicorn", "", lambda v, s: v <= 0.3 and v <= s),
    ),
    Target("1c late boot, empty DB", ("launcher",), "", "<= 0.5 s", _below(0.5)),
    Target("5 idle cost", ("launcher",), "CPU", "<= 0.5 %", _below(0.5)),
    Target(
        "5 idle cost", ("launcher",), "RSS", "< supervisord", _vs("5 idle cost", "supervisord", "RSS", float.__lt__)
    ),
    Target(
        "6 throughput",
        ("launcher",),
        "",
        ">= 0.97 x bare uvicorn",
        _vs("6 throughput", "bare uvicorn", "", lambda v, bare: v >= 0.97 * bare),
    ),
    Target(
        "6 throughput",
        ("launcher (2 workers)",),
        "",
        ">= 0.97 x gunicorn -w 2",
        _vs("6 throughput", GUNICORN, "", lambda v, g: v >= 0.97 * g),
    ),
    Target("7 clean stop", ("launcher",), "exit code", "0", _never),
    Target(
        "7 clean stop",
        ("launcher",),
        "in-flight",
        "100 %",
        lambda row, med: row.median is not None and row.median == 100,
    ),
    Target("9 worker crash", ("launcher (2 workers)",), "kill -9", "0 in every run", _never),
    Target(
        "10 memory",
        ("launcher (2 workers)",),
        "",
        "< gunicorn -w 2, < uvicorn --workers 2, <= 1.15 x gunicorn --preload",
        _memory,
    ),
    Target(
        "11 worker limits",
        ("launcher",),
        "RSS growth at the peak of 20",
        "< gunicorn -w 1's",
        _vs("11 worker limits", GUNICORN_1, "RSS growth at the peak of 20", float.__lt__),
    ),
    Target("11 worker limits", ("launcher",), "RSS kept 5 s after the POSTs", "<= 10 MB", _below(10.0)),
    Target(
        "11 worker limits",
        ("launcher",),
        "RSS growth at the peak of 12",
        "< gunicorn -w 1's",
        _vs("11 worker limits", GUNICORN_1, "RSS growth at the peak of 12", float.__lt__),
    ),
    Target("11 worker limits", ("launcher",), "RSS kept 5 s after the pipelining", "<= 10 MB", _below(10.0)),
    Target(
        "11 worker limits",
        ("launcher",),
        "fresh clients",
        "42 of 42",
        lambda row, med: row.median is not None and row.median == 42,
    ),
    Target("12 reload", ("launcher --reload",), "requests not answered", "0", _never),
    Target(
        "12 reload",
        ("launcher --reload",),
        "save",
        "<= uvicorn --reload",
        _vs("12 reload", "uvicorn --reload", "save", float.__le__),
    ),
    Target("12 reload", ("launcher --reload",), "CPU", "<= 0.5 %", _below(0.5)),
    Target("13 image", ("the launcher's image (Dockerfile)",), "added", "<= 5 MB", _below(5.0)),
]


def judge(rows: list[Row]) -> None:
    """Set each row's target and whether it is met, from TARGETS and the rows of this run."""

    def med(figure: str, peer: str, metric: str) -> float | None:
        return next(
            (r.median for r in rows if r.figure == figure and r.peer == peer and r.metric.startswith(metric)), None
        )

    for row in rows:
        for target in TARGETS:
            if row.figure == target.figure and row.peer in target.peers and row.metric.startswith(target.metric):
                row.target, row.met = target.text, target.met(row, med)


def _cell(row: Row) -> str:
    if row.median is None:
        return f"never recovered ({len(row.values) - len(row.done)}/{len(row.values)} runs)"
    places = 3 if row.unit == "s" and row.done[-1] < 1 else 2  # tens of ms apart must show
    spread = f" ({row.done[0]:.{places}f}–{row.done[-1]:.{places}f})" if len(row.done) > 1 else ""
    return f"{row.median:.{places}f}{spread} {row.unit}".strip()


def table(rows: list[Row]) -> str:
    lines = ["| figure | peer | measure | median (min–max) | runs | target | met |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r.figure} | {r.peer} | {r.metric} | {_cell(r)} | {len(r.values)} | {r.target} | {_MET[r.met]} |"
        for r in rows
    ]
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
    ours = ", ".join(
        f"{p} {version(p)}" for p in ("uvicorn", "uvloop", "httptools", "fastapi", "sqlalchemy", "pymysql")
    )
    peers = "; ".join(
        f"{name}: {venvs.versions(name, *packages)}"
        for name, packages in (
            ("uvicorn", ("uvicorn", "uvloop", "httptools")),
            ("gunicorn", ("gunicorn", "uvicorn-worker", "uvicorn", "uvloop", "httptools")),
            ("granian", ("granian",)),
            ("supervisord", ("supervisor",)),
        )
    )
    return (
        f"{platform.platform()}, {cpus} cores, Python {sys.version.split()[0]}; the launcher's venv: {ours}; "
        f"each peer in a venv of its own as its users install it ({peers}); {mariadb}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def write(rows: list[Row], timelines: dict[str, dict[str, list[tuple[float, str]]]], out: Path) -> str:
    judge(rows)
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `python -m bench` (`./dev bench`): the median of each figure's runs, "
            "each target judged by `bench/report.py` against the peers of the same run.",
            "",
            f"Machine: {machine()}",
            "",
            table(rows),
            "",
            "Ratios against the reference measured in the same run:",
            "",
            *[f"- {line}" for line in ratios(rows)],
            "",
            "![availability](availability.png)",
            "",
        ]
    )
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
    for ax, (title, peers) in zip(axes[0], timelines.items(), strict=False):
        names = list(peers)
        for row, name in enumerate(names):
            points = peers[name]
            for (t, result), (t_next, _) in zip(points, points[1:] + [(points[-1][0] + 0.02, "")], strict=True):
                ax.barh(row, t_next - t, left=t, color=COLOURS.get(result, "#9e9e9e"), height=0.6, linewidth=0)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("seconds from the fault")
        ax.set_title(f"what a client saw of {title}", fontsize=10)
        ax.invert_yaxis()
    fig.legend(handles=[Patch(color=c, label=k) for k, c in COLOURS.items()], loc="lower center", ncol=5)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
