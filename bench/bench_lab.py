"""How long the lab takes: `make lab` from nothing (by phase), and a no-op converge.

    .venv/bin/python bench/bench_lab.py [--keep] [--noop-rounds 3]

From nothing means `make lab-destroy` first (hosts, image, keys and bridge removed), then
`make lab` (image from debootstrap with the baked packages, boot, converge, demo). Then a reboot
of every host, and the converge again, which must change nothing (changed=0), a few times.
--keep skips the destroy and measures only no-op converges of the lab as it is.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECAP = re.compile(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)


def timed(*argv):
    started = time.monotonic()
    proc = subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("%s failed (rc=%d):\n%s" % (" ".join(argv), proc.returncode, (proc.stdout + proc.stderr)[-4000:]))
    return seconds, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="do not destroy the lab first")
    parser.add_argument("--noop-rounds", type=int, default=3)
    args = parser.parse_args()

    rows = []
    if not args.keep:
        rows.append(("make lab-destroy", timed("make", "lab-destroy")[0]))
        rows.append(("make lab from nothing (image, boot, converge, demo)", timed("make", "lab")[0]))
        timed("make", "lab-down")
        rows.append(("boot of every host, image present (make lab-up)", timed("make", "lab-up")[0]))

    noop = []
    for _round in range(args.noop_rounds):
        seconds, out = timed("make", "converge")
        changed = sum(int(n) for n in RECAP.findall(out))
        if changed:
            sys.exit("a no-op converge changed %d thing(s): not a no-op\n%s" % (changed, out[-4000:]))
        noop.append(seconds)
    rows.append(("no-op converge, changed=0 (median of %d)" % len(noop), statistics.median(noop)))

    width = max(len(name) for name, _value in rows)
    for name, seconds in rows:
        print("%-*s %8.1f s" % (width, name, seconds))


if __name__ == "__main__":
    main()
