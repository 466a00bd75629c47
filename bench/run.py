"""python -m bench [--only NAME ...]: every figure against one private MariaDB, then the report."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import figures, report
from localdb.server import MariaDB

OUT = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = [f.__name__ for f in figures.all_figures()]
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    parser.add_argument("--out", type=Path, default=OUT, help="where RESULTS.md and availability.png go")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        db = MariaDB(Path(tmp) / "db")
        db.start()
        bench = figures.Bench(db, Path(tmp))
        try:
            for figure in figures.all_figures():
                if figure.__name__ in args.only:
                    print(f"{figure.__name__}: {figure.__doc__.splitlines()[0] if figure.__doc__ else ''}", flush=True)
                    figure(bench)
        finally:
            db.stop()
        text = report.write(bench.rows, bench.timelines, args.out)
    print(text)
    print(f"took {time.monotonic() - started:.0f}s")
    return 0
