"""Audit report generation at scale: 5,000 nodes, 20,000 directory users, 100,000 accounting records.

Times each phase of `daskhpc audit` on synthetic inputs in the sources' own formats
(scontrol/sacctmgr/sacct text, ledger JSON lines, PEM files), and the same tables
written by a plain csv.writer as the floor any report must pay. Goal: under 15 s.

    .venv/bin/python bench/bench_audit.py [--nodes 5000 --users 20000 --jobs 100000]
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import tempfile
import time

from daskhpc.audit import collect
from daskhpc.audit.render import TABLES, render, stamp, tables, to_html, to_json, to_markdown
from daskhpc.audit.synthetic import large_site


def timed(label, results, fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    results.append((label, time.perf_counter() - start))
    return value


def plain_csv(report, directory):
    """Baseline: the same tables dumped with csv.writer, no parsing, templates or charts."""
    for name, _section, _title, columns, rows in TABLES:
        with open(os.path.join(directory, name + ".csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([[row.get(c) for c in columns] for row in rows(report)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=100000)
    args = parser.parse_args()

    start = time.perf_counter()
    inputs = large_site(args.nodes, args.users, args.jobs)
    print("synthetic site: %d nodes, %d users, %d accounting records, %d ledger lines (built in %.1f s, not timed)"
          % (args.nodes, args.users, args.jobs, inputs["ledger"].count("\n"), time.perf_counter() - start))

    phases = []
    with tempfile.TemporaryDirectory() as out:
        report = timed("collect (parse, join, judge)", phases, collect, inputs)
        report = stamp(report)
        tabs = timed("tables", phases, tables, report)
        html = timed("render HTML", phases, to_html, report, tabs)
        timed("render Markdown", phases, to_markdown, report, tabs)
        timed("render JSON", phases, to_json, report)
        timed("write all formats", phases, render, copy.deepcopy(report), out)
        baseline = []
        timed("plain csv.writer of the same tables", baseline, plain_csv, report, out)
        sizes = {name: os.path.getsize(os.path.join(out, name)) for name in os.listdir(out)
                 if os.path.isfile(os.path.join(out, name))}

    # "write all formats" redoes the renders; the end-to-end figure is collect + write.
    total = phases[0][1] + phases[-1][1]
    print()
    print("%-40s %8s" % ("phase", "seconds"))
    for label, seconds in phases + baseline:
        print("%-40s %8.2f" % (label, seconds))
    print("%-40s %8.2f  (goal < 15 s: %s)" % ("end to end (collect + write all formats)", total,
                                              "met" if total < 15 else "MISSED"))
    print("ratio end to end / plain csv dump: %.1fx" % (total / baseline[0][1]))
    print()
    print("HTML %.1f MB (%d bytes), JSON %.1f MB, Markdown %.1f MB" % (
        len(html.encode()) / 1e6, len(html.encode()), sizes["audit-report.json"] / 1e6, sizes["audit-report.md"] / 1e6))
    summary = report["summary"]
    print("rows: access %d, certificates %d, usage %d, findings %d"
          % (len(report["access"]), len(report["certificates"]), len(report["usage"]["by_user_partition"]),
             len(report["findings"])))
    print("findings by severity: %s" % summary["findings_by_severity"])


if __name__ == "__main__":
    main()
