"""`daskhpc` command line: one entry point, each subcommand lives in its own module."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "doctor": ("daskhpc.doctor", "check this site's Dask set-up and say how to fix what fails"),
    "cluster": ("daskhpc.named", "start, list and stop named clusters that outlive your terminal"),
    "venv": ("daskhpc.environment", "make your own environment on the site's (for your packages on the workers)"),
    "audit": ("daskhpc.audit", "write the audit reports (HTML, Markdown, CSV, JSON)"),
    "exporter": ("daskhpc.exporter.server", "serve the scheduler's Prometheus metrics"),
    "discovery-serve": ("daskhpc.discovery_serve", "serve this login host's Dask schedulers to Prometheus (http_sd)"),
}


def usage():
    lines = ["usage: daskhpc COMMAND [options]", "", "commands:"]
    lines += ["  %-16s %s" % (name, text) for name, (_module, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print("daskhpc: unknown command %r\n\n%s" % (command, usage()), file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
