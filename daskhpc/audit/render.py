# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write the report as self-contained HTML, Markdown, one CSV per table, and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timezone
from html import escape

import jinja2

from daskhpc.audit.findings import SEVERITIES
from daskhpc.files import write_atomically

FORMATS = ("html", "md", "csv", "json")
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(HERE, "schema", "report-v1.json")
BASENAME = "audit-report"

# (csv name, HTML section, title, columns, rows)
TABLES = [
    ("findings", "findings", "Policy findings",
     ["severity", "rule", "subject", "title", "detail", "fix"], lambda r: r["findings"]),
    ("inventory", "inventory", "Hosts",
     ["host", "roles", "os", "slurm", "munge", "slapd", "python", "dask"], lambda r: r["inventory"]),
    ("partitions", "partitions", "Partitions (site model and scheduler)",
     ["name", "class", "in_model", "in_scheduler", "nodes", "total_cpus", "allow_groups_model",
      "allow_groups_scheduler", "priority_tier_model", "priority_tier_scheduler", "preempt_mode_model",
      "preempt_mode_scheduler", "grace_time_scheduler", "max_time_model", "max_time_scheduler", "qos_model",
      "qos_scheduler", "state_scheduler"], lambda r: r["partitions"]),
    ("qos", "partitions", "Quality of service (scheduler, with the site model's burst limits)",
     ["name", "in_model", "in_scheduler", "priority", "preempt", "preempt_mode", "grace_time",
      "max_tres_per_user", "max_jobs_per_user", "max_submit_per_user", "grp_tres", "max_wall", "flags",
      "model_max_tres_per_user", "model_max_jobs_per_user", "model_grp_tres", "model_max_wall"],
     lambda r: r["qos"]),
    ("access", "access", "Who can use each partition, and through which group",
     ["partition", "class", "user", "groups", "association", "in_directory"], lambda r: r["access"]),
    ("access_mismatches", "access", "Access mismatches",
     ["partition", "kind", "user", "group", "detail"], lambda r: r["access_mismatches"]),
    ("associations", "access", "Slurm associations",
     ["user", "account", "partition", "qos", "default_qos", "cluster"], lambda r: r["associations"]),
    ("certificates", "certificates", "Certificates (issuance ledger and deployed files)",
     ["status", "source", "subject", "sans", "serial", "host", "path", "profile", "key_type", "key_bits",
      "signature_hash", "weak", "not_before", "not_after", "days_left", "requested_by", "issued_at",
      "revoked_at", "revocation_reason", "is_ca", "in_ledger"], lambda r: r["certificates"]),
    ("usage_by_partition", "usage", "Usage by partition",
     ["partition", "class", "users", "jobs", "core_hours", "preemptions"], lambda r: r["usage"]["by_partition"]),
    ("burst_share", "usage", "Burst share over time",
     ["bucket", "burst_core_hours", "total_core_hours", "burst_share_percent"],
     lambda r: r["usage"]["burst_share"]),
    ("usage_by_user_partition", "usage", "Usage by user and partition",
     ["user", "partition", "jobs", "core_hours", "preemptions"], lambda r: r["usage"]["by_user_partition"]),
    ("drift", "drift", "Configuration drift (changes a check-mode run of the site playbook would make)",
     ["host", "play", "task", "action", "diff"], lambda r: r["drift"]),
    ("packages", "packages", "Packages and licences of the production Python environments",
     ["host", "package", "version", "licence", "denied_by", "exempt"], lambda r: r["packages"]),
    ("sources", "sources", "Sources of this report",
     ["source", "status", "detail"], lambda r: r["sources"]),
]


def cell(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def tables(report):
    """Every table as (name, section, title, columns, rows of strings)."""
    return [(name, section, title, cols, [[cell(row.get(c)) for c in cols] for row in rows(report)])
            for name, section, title, cols, rows in TABLES]


# --- inline SVG charts ---------------------------------------------------------

SEVERITY_COLOURS = {"critical": "#7f0000", "high": "#c62828", "medium": "#ef6c00", "low": "#f9a825",
                    "info": "#607d8b"}


def hbar_chart(title, items, unit="", colours=None):
    """Horizontal bars: items is [(label, value)]. Plain SVG, no script, prints as is."""
    width, label_w, row_h = 640, 180, 22
    height = 30 + row_h * max(1, len(items))
    top = max([v for _label, v in items] + [0]) or 1
    out = ['<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d">'
           % (width, height, width, height), "<title>%s</title>" % escape(title),
           '<text x="0" y="16" class="chart-title">%s</text>' % escape(title)]
    if not items:
        out.append('<text x="0" y="42">no data</text>')
    for i, (label, value) in enumerate(items):
        y = 26 + i * row_h
        bar_width = (width - label_w - 90) * (value / top)
        colour = (colours or {}).get(label, "#1565c0")
        out.append('<text x="0" y="%d">%s</text>' % (y + 14, escape(str(label)[:26])))
        out.append('<rect x="%d" y="%d" width="%.1f" height="16" fill="%s"/>' % (label_w, y + 2, bar_width, colour))
        out.append('<text x="%.1f" y="%d">%s%s</text>' % (label_w + bar_width + 6, y + 14, _num(value), unit))
    out.append("</svg>")
    return "\n".join(out)


def share_chart(title, points):
    """Burst share per bucket as vertical bars (0-100 %)."""
    width, height, left, bottom = 640, 220, 40, 30
    plot_w, plot_h = width - left - 10, height - bottom - 30
    out = ['<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d">'
           % (width, height, width, height), "<title>%s</title>" % escape(title),
           '<text x="0" y="16" class="chart-title">%s</text>' % escape(title)]
    for pct in (0, 50, 100):
        y = 30 + plot_h * (1 - pct / 100)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#bbb"/>' % (left, y, width - 10, y))
        out.append('<text x="0" y="%.1f">%d%%</text>' % (y + 4, pct))
    step = plot_w / max(1, len(points))
    for i, (label, pct) in enumerate(points):
        bar_h = plot_h * pct / 100
        x = left + i * step
        out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#6a1b9a"><title>%s: %s%%</title>'
                   "</rect>" % (x + 1, 30 + plot_h - bar_h, max(1.0, step - 2), bar_h, escape(label), pct))
    if points:
        for i in sorted({0, len(points) // 2, len(points) - 1}):
            out.append('<text x="%.1f" y="%d">%s</text>' % (left + i * step, height - 8, escape(points[i][0])))
    out.append("</svg>")
    return "\n".join(out)


def _num(value):
    return ("%.1f" % value).rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def charts(report):
    summary = report["summary"]
    return {
        "findings": hbar_chart("Findings by severity",
                               [(s, summary["findings_by_severity"][s]) for s in SEVERITIES], "",
                               SEVERITY_COLOURS),
        "certificates": hbar_chart("Certificates by status", sorted(summary["certificates_by_status"].items())),
        "core_hours": hbar_chart("Core-hours by partition",
                                 [(p["partition"], p["core_hours"]) for p in report["usage"]["by_partition"]],
                                 " h"),
        "burst_share": share_chart("Burst share of core-hours per %s" % report["usage"]["bucket"],
                                   [(b["bucket"], b["burst_share_percent"]) for b in report["usage"]["burst_share"]]),
    }


# --- writers ---------------------------------------------------------------------


def _env():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
                              autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=False),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def _md_cell(text):
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def to_json(report):
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def to_csv(columns, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def to_html(report, tabs=None):
    tabs = tabs or tables(report)
    return _env().get_template("report.html.j2").render(
        report=report, tables=tabs, charts=charts(report), severities=SEVERITIES)


def to_markdown(report, tabs=None):
    tabs = tabs or tables(report)
    md_tables = [(n, s, t, [_md_cell(c) for c in cols], [[_md_cell(c) for c in row] for row in rows])
                 for n, s, t, cols, rows in tabs]
    env = _env()
    env.autoescape = False
    return env.get_template("report.md.j2").render(report=report, tables=md_tables, severities=SEVERITIES)


def stamp(report, now=None):
    report["generated_at"] = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return report


def render(report, output_dir, formats=FORMATS):
    """Write the chosen formats into output_dir; returns {format: [paths]}."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError("unknown format(s) %s: use %s" % (", ".join(sorted(unknown)), ",".join(FORMATS)))
    if not report.get("generated_at"):
        stamp(report)
    os.makedirs(output_dir, exist_ok=True)
    tabs = tables(report)
    written = {}
    if "json" in formats:
        path = os.path.join(output_dir, BASENAME + ".json")
        write_atomically(path, to_json(report), mode=0o644)
        written["json"] = [path]
    if "csv" in formats:
        csv_dir = os.path.join(output_dir, "csv")
        os.makedirs(csv_dir, exist_ok=True)
        written["csv"] = []
        for name, _section, _title, cols, rows in tabs:
            path = os.path.join(csv_dir, name + ".csv")
            write_atomically(path, to_csv(cols, rows), mode=0o644)
            written["csv"].append(path)
    if "md" in formats:
        path = os.path.join(output_dir, BASENAME + ".md")
        write_atomically(path, to_markdown(report, tabs), mode=0o644)
        written["md"] = [path]
    if "html" in formats:
        path = os.path.join(output_dir, BASENAME + ".html")
        write_atomically(path, to_html(report, tabs), mode=0o644)
        written["html"] = [path]
    return written
