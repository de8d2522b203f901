"""`daskhpc exporter`: the batch system's Prometheus metrics, curated for IT.

Configuration comes from a YAML file the ``slurm_exporter`` role writes from the site model
(filter ``onprem.daskhpc.metrics_exporter_config``)::

    site: lab
    scheduler: slurm                  # picks the source in SOURCES
    listen_address: 10.0.0.10         # default 127.0.0.1; any other address needs tls
    listen_port: 9817
    min_interval_seconds: 10          # squeue/sinfo at most this often, whatever the scrape rate
    slow_interval_seconds: 60         # sdiag and sacct at most this often
    scrape_budget_seconds: 8          # one scrape runs commands for at most this long (< Prometheus's scrape_timeout)
    command_timeout_seconds: 5        # any one command; must be shorter than the budget
    burst_partitions: [burst]
    production_partitions: [prod, bigmem]
    burst_max_share_ratio: 0.5
    burst_max_cores: 24
    ledger_path: /etc/daskhpc/ca/ledger.jsonl
    slurm_bin_dir: ""                 # empty: find squeue etc. on PATH
    tls:                              # mutual TLS; required unless listen_address is loopback
      cert: /etc/daskhpc/tls/daskhpc-exporter.pem
      key: /etc/daskhpc/tls/daskhpc-exporter.key
      ca: /etc/daskhpc/tls/ca.pem
      crl: /etc/daskhpc/tls/crl.pem
      allow: [svc]                    # names in Prometheus's site service certificate

``daskhpc exporter --once`` prints one scrape to stdout (for ``promtool check metrics``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

import yaml
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.process_collector import ProcessCollector

from daskhpc.exporter.collectors import BatchCollector, CertificateCollector, ExporterStats
from daskhpc.exporter.slurm import SlurmSource
from daskhpc.exporter.source import BatchSource
from daskhpc.scheduler import BatchError, ClusterState, Job, Node, Preemption

DEFAULT_CONFIG = "/etc/daskhpc/exporter.yaml"
DEFAULTS = {
    "site": "",
    "scheduler": "slurm",
    "listen_address": "127.0.0.1",  # nothing on the network without tls
    "listen_port": 9817,
    "min_interval_seconds": 10,
    "slow_interval_seconds": 60,
    "burst_partitions": [],
    "production_partitions": [],
    "burst_max_share_ratio": None,
    "burst_max_cores": None,
    "ledger_path": None,
    "slurm_bin_dir": "",
    "scrape_budget_seconds": 8,
    "command_timeout_seconds": 5,
    "accounting_overlap_seconds": 600,
    "tls": None,
}
LOOPBACK = ("127.0.0.1", "::1", "localhost")
TLS_KEYS = ("cert", "key", "ca", "crl", "allow")

#: scheduler name (site model ``scheduler``) -> BatchSource subclass, or "module:Class" imported
#: on first use (so a SLURM site never imports the PBS source and vice versa).
SOURCES = {"slurm": SlurmSource, "pbs": "daskhpc.exporter.pbs:PbsSource"}


def source_class(scheduler):
    found = SOURCES[scheduler]
    if isinstance(found, str):
        module, _sep, name = found.partition(":")
        found = SOURCES[scheduler] = getattr(importlib.import_module(module), name)
    return found


__all__ = ["SOURCES", "BatchCollector", "BatchSource", "BatchError", "CertificateCollector",
           "ClusterState", "Job", "Node", "Preemption", "build_registry", "load_config", "main"]


class ConfigError(ValueError):
    pass


def load_config(path):
    """The exporter's configuration: DEFAULTS overlaid with the YAML file at `path`."""
    try:
        with open(path, encoding="utf-8") as handle:
            given = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError("cannot read %s: %s. Fix: run the slurm_exporter role, or pass --config" % (path, exc)) \
            from exc
    if not isinstance(given, dict):
        raise ConfigError("%s: must be a YAML mapping" % path)
    unknown = sorted(set(given) - set(DEFAULTS) - {"pbs_bin_dir"})
    if unknown:
        raise ConfigError("%s: unknown keys %s. Fix: remove them (known: %s)"
                          % (path, ", ".join(unknown), ", ".join(sorted(DEFAULTS))))
    config = dict(DEFAULTS, **given)
    if config["scheduler"] not in SOURCES:
        raise ConfigError("%s: scheduler %r has no exporter source. Fix: use one of %s"
                          % (path, config["scheduler"], ", ".join(sorted(SOURCES))))
    _check_tls(path, config)
    budget, timeout = config["scrape_budget_seconds"], config["command_timeout_seconds"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (budget, timeout)) \
            or timeout >= budget:
        raise ConfigError("%s: command_timeout_seconds %r must be a positive number below scrape_budget_seconds %r. "
                          "Fix: e.g. 5 and 8 (a scrape must end before Prometheus's scrape_timeout, 10 s by default)"
                          % (path, timeout, budget))
    return config


def _check_tls(path, config):
    tls = config["tls"]
    if tls is None:
        if config["listen_address"] not in LOOPBACK:
            raise ConfigError("%s: tls is missing, so the exporter would serve %s unauthenticated. Fix: give tls "
                              "(cert, key, ca, allow), as the slurm_exporter role does, or listen on 127.0.0.1"
                              % (path, config["listen_address"]))
        return
    if not isinstance(tls, dict) or sorted(set(tls) - set(TLS_KEYS)) or not all(tls.get(k) for k in TLS_KEYS[:3]):
        raise ConfigError("%s: tls must be a mapping with cert, key, ca (and crl, allow). Fix: e.g. the "
                          "slurm_exporter role's" % path)
    if not isinstance(tls.get("allow"), list) or not tls["allow"]:
        raise ConfigError("%s: tls.allow must list the names in Prometheus's service certificate (e.g. its host). "
                          "Fix: set it, or nobody can scrape" % path)


def serve(config, registry):
    """The exporter's HTTP server, started in a thread: mutual TLS to the allowed Prometheus, or plain HTTP
    on loopback only (load_config refuses anything else)."""
    address, port = config["listen_address"], config["listen_port"]
    tls = config["tls"]
    if tls is None:
        server, _thread = start_http_server(port, address, registry)
        return server
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    from prometheus_client import make_wsgi_app

    from daskhpc.tls_server import MutualTLSServer, TLSFiles

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
            pass

    class Server(MutualTLSServer, WSGIServer):
        pass

    files = TLSFiles(tls["cert"], tls["key"], tls["ca"], tls.get("crl"))
    files.context()  # fail now, not at the first scrape, if the files are unusable
    server = Server((address, port), Quiet, files, tls["allow"])
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True).start()
    return server


def build_registry(config, source=None):
    """A registry holding the batch, ledger, self-monitoring and process collectors."""
    registry = CollectorRegistry(auto_describe=False)
    stats = ExporterStats()
    source = source or source_class(config["scheduler"])(config)
    registry.register(BatchCollector(source, config, stats))
    if config.get("ledger_path"):
        registry.register(CertificateCollector(config["ledger_path"], stats))
    registry.register(stats)
    ProcessCollector(namespace="daskhpc_exporter", registry=registry)
    return registry


def main(argv=None):
    parser = argparse.ArgumentParser(prog="daskhpc exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration (default %(default)s)")
    parser.add_argument("--listen-port", type=int, help="override listen_port")
    parser.add_argument("--listen-address", help="override listen_address")
    parser.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    parser.add_argument("--check-config", action="store_true", help="only check the configuration file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("daskhpc exporter: %s" % exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("%s: OK" % args.config)
        return 0
    if args.listen_port:
        config["listen_port"] = args.listen_port
    if args.listen_address:
        config["listen_address"] = args.listen_address
    registry = build_registry(config)
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    server = serve(config, registry)
    logging.getLogger("daskhpc.exporter").info("serving on %s:%s (%s)", config["listen_address"],
                                               config["listen_port"], "mutual TLS" if config["tls"] else "loopback")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0
