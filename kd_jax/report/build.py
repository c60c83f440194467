"""`kd-jax report RUN_DIRS... --out DIR`: the Markdown report and figures across runs.

    kd-jax report runs/sweep/* --out runs/sweep/report

Each RUN_DIR is an evaluated run (run.json + eval/scores.json, see runs.py). A folder that
is not itself a run but holds runs (a sweep's workdir) stands for every run inside it, so
`kd-jax report runs/sweep --out ...` works too; folders with nothing evaluated (a
teacher that was never evaluated, the report folder itself) are skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import sys

from kd_jax.report import RUN_JSON, ReportError, write_report


def expand_run_dirs(paths: list[str]) -> tuple[list[str], list[str]]:
    """(evaluated run folders, skipped folders) from run folders and folders of runs."""
    runs, skipped = [], []
    for path in paths:
        if not os.path.isdir(path):
            raise ReportError(f"{path}: no such folder; pass run folders or a sweep's workdir")
        if os.path.exists(os.path.join(path, RUN_JSON)):
            runs.append(path)
            continue
        inner = sorted(
            os.path.join(path, d)
            for d in os.listdir(path)
            if os.path.exists(os.path.join(path, d, RUN_JSON))
        )
        if inner:
            runs.extend(inner)
        else:
            skipped.append(path)
    return runs, skipped


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kd-jax report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="folder for report.md, summary.json, PNGs")
    args = p.parse_args(argv)
    try:
        runs, skipped = expand_run_dirs(args.run_dirs)
        for path in skipped:
            print(f"kd-jax report: skipping {path} (no run.json: not evaluated)")
        path = write_report(runs, args.out)
    except ReportError as e:
        print(f"kd-jax: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {path} ({len(runs)} runs)")
    return 0
