"""The `flowprobe` command.

    flowprobe check PATH...            validate workflows; exit 0 or 1 (like promtool check)
    flowprobe schema [--environments]  print a JSON Schema for editors (yaml-language-server)
    flowprobe run --config DIR [--env E] [--shard i/N] [--once]
    flowprobe demo                     demo target + collector + analytics, no external server
    flowprobe analytics [--source history:PATH|prometheus:URL]   anomaly scores as Prometheus series
    flowprobe target                   the demo target alone
    flowprobe rules [--check]          Prometheus rules and promtool tests from the workflows
    flowprobe alerts list|show|ack|resolve
    flowprobe report --period daily|weekly|monthly --format html|pdf|csv|json [--env E] [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from collector.config import ConfigError, load_config
from collector.log import configure_logging
from collector.scheduler import Shard

if TYPE_CHECKING:
    from collector.service import Service

__all__ = ["main"]

DEFAULT_LISTEN = "127.0.0.1:9700"
DEFAULT_ANALYTICS_LISTEN = "127.0.0.1:9701"


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    from collector.config import parse_duration

    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than zero")
    return seconds


def _source(text: str) -> str:
    kind, _, where = text.partition(":")
    if not (kind == "history" and where) and not (kind == "prometheus" and where.startswith(("http://", "https://"))):
        raise argparse.ArgumentTypeError(f"expected history:PATH or prometheus:URL, got {text!r}")
    return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def _report_end(text: str) -> datetime:
    from collector.report import parse_end

    return parse_end(text)


def _default_source() -> str:
    # Compose sets FLOWPROBE_PROMETHEUS_URL; alone, read the history `flowprobe run` writes by default.
    url = os.environ.get("FLOWPROBE_PROMETHEUS_URL")
    return f"prometheus:{url}" if url else "history:data/history.sqlite3"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowprobe", description="Synthetic workflow monitoring for Prometheus.")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate workflow files and exit 0 (valid) or 1 (invalid)")
    check.add_argument("paths", nargs="+", type=Path, help="workflow files or directories")
    check.add_argument("--environments", type=Path, help="environments.yaml (default: the one in or beside PATH)")

    schema = sub.add_parser("schema", help="print the JSON Schema of a workflow file")
    schema.add_argument("--environments", action="store_true", help="print the schema of environments.yaml instead")

    run = sub.add_parser("run", help="run the collector daemon")
    run.add_argument("--config", type=Path, default=Path("workflows"), help="config directory (default: workflows)")
    run.add_argument("--env", action="append", dest="envs", help="run only this environment (repeatable)")
    run.add_argument("--shard", type=_shard, default=Shard(), help="run the i-th of N hash shares of the pairs (0-based)")
    run.add_argument("--listen", type=_listen, default=_listen(DEFAULT_LISTEN), help=f"API and /metrics address (default {DEFAULT_LISTEN})")
    run.add_argument("--data-dir", type=Path, default=Path("data"), help="where the SQLite history lives (default: data)")
    run.add_argument("--grace", type=float, default=25.0, help="seconds runs in flight may take to finish on SIGTERM")
    run.add_argument("--no-watch", dest="watch", action="store_false", help="reload on SIGHUP only, not on file changes")
    run.add_argument("--once", action="store_true", help="run every pair once, print the results as JSON lines, exit 1 if any failed")
    run.add_argument("--log-level", default=os.environ.get("FLOWPROBE_LOG_LEVEL", "info"))

    demo = sub.add_parser("demo", help="run the demo target and the collector in one process, no external server")
    demo.add_argument("--config", type=Path, default=Path("workflows"))
    demo.add_argument("--listen", type=_listen, default=_listen(DEFAULT_LISTEN))
    demo.add_argument("--target-port", type=int, default=8080, help="first of three ports for the prod, staging and dev targets")
    demo.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    demo.add_argument("--analytics-listen", type=_listen, default=_listen(DEFAULT_ANALYTICS_LISTEN),
                      help=f"the analytics worker's /metrics and API (default {DEFAULT_ANALYTICS_LISTEN})")
    demo.add_argument("--log-level", default=os.environ.get("FLOWPROBE_LOG_LEVEL", "warning"))

    analytics = sub.add_parser("analytics", help="run the analytics worker: anomaly scores of the workflows as Prometheus series")
    analytics.add_argument("--listen", type=_listen, default=_listen(DEFAULT_ANALYTICS_LISTEN),
                           help=f"/metrics and API address (default {DEFAULT_ANALYTICS_LISTEN})")
    analytics.add_argument("--source", type=_source, default=_default_source(),
                           help="history:PATH (the collector's SQLite history, embedded mode) or prometheus:URL (stack mode); "
                                "default prometheus:$FLOWPROBE_PROMETHEUS_URL if set, else history:data/history.sqlite3")
    analytics.add_argument("--interval", type=_duration, default=15.0, help="how often to read new points, e.g. 15s (default 15s)")
    analytics.add_argument("--state-dir", type=Path, default=Path("data/analytics"),
                           help="where the detectors are saved, so a restart resumes (default data/analytics)")
    analytics.add_argument("--threshold", type=_fraction, default=None,
                           help="score from which flowprobe_anomaly is 1 (default: the shipped detector's calibrated threshold)")
    analytics.add_argument("--probation", type=_count, default=None,
                           help="points each series' detector learns before flowprobe_anomaly can be 1 (default: the shipped detector's, 750)")
    analytics.add_argument("--influx-url", default=os.environ.get("FLOWPROBE_INFLUX_URL"),
                           help="also write the scores and predictions to this InfluxDB v2 write endpoint "
                                "(token in FLOWPROBE_INFLUX_TOKEN; default $FLOWPROBE_INFLUX_URL, else none)")
    analytics.add_argument("--influx-org", default=os.environ.get("FLOWPROBE_INFLUX_ORG"), help="the InfluxDB organisation")
    analytics.add_argument("--influx-bucket", default=os.environ.get("FLOWPROBE_INFLUX_BUCKET"), help="the InfluxDB bucket")
    analytics.add_argument("--log-level", default=os.environ.get("FLOWPROBE_LOG_LEVEL", "info"))

    rules = sub.add_parser("rules", help="write Prometheus recording and alerting rules (and their promtool tests) from the workflows")
    rules.add_argument("--config", type=Path, default=Path("workflows"))
    rules.add_argument("--rules", type=Path, default=Path("provisioning/prometheus/rules/flowprobe.rules.yml"), help="rules file to write")
    rules.add_argument("--tests", type=Path, default=Path("provisioning/prometheus/tests/flowprobe.test.yml"), help="promtool test file to write")
    rules.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ from what the workflows give")

    alerts = sub.add_parser("alerts", help="list, show, acknowledge and resolve alerts through the collector's API")
    alerts.add_argument("--url", default=os.environ.get("FLOWPROBE_URL", f"http://{DEFAULT_LISTEN}"), help="the collector (default $FLOWPROBE_URL)")
    alerts.add_argument("--token-env", default="FLOWPROBE_TOKEN", help="environment variable holding the API token (default FLOWPROBE_TOKEN)")
    alerts_sub = alerts.add_subparsers(dest="action", required=True)
    listing = alerts_sub.add_parser("list", help="alerts, newest first")
    for name in ("status", "severity", "workflow", "env"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = alerts_sub.add_parser("show", help="one alert with its history")
    show.add_argument("id")
    for action in ("ack", "resolve"):
        acting = alerts_sub.add_parser(action, help=f"{'acknowledge' if action == 'ack' else 'resolve'} an alert")
        acting.add_argument("id")
        acting.add_argument("--comment", "-m", required=True)

    report = sub.add_parser("report", help="an SLA report (availability, uptime, error budget, latency, incidents) from the run history")
    report.add_argument("--period", required=True, choices=("daily", "weekly", "monthly"), help="the period, ending at --end")
    report.add_argument("--format", default="html", choices=("html", "pdf", "csv", "json"), help="the file format (default html)")
    report.add_argument("--env", help="only this environment (default: every environment, one section each)")
    report.add_argument("--output", type=Path, help="the file to write, - for stdout (default: the reports directory, named by period, env and end)")
    report.add_argument("--config", type=Path, default=Path("workflows"), help="config directory (default: workflows)")
    report.add_argument("--data-dir", type=Path, default=Path("data"), help="where the run and alert histories live (default: data)")
    report.add_argument("--end", type=_report_end, help="end of the period, ISO 8601, UTC unless a zone is given (default: now)")

    target = sub.add_parser("target", help="serve the demo farmers-market target alone (as in docker compose)")
    target.add_argument("--listen", type=_listen, default=_listen("127.0.0.1:8080"))
    target.add_argument("--log-level", default=os.environ.get("FLOWPROBE_LOG_LEVEL", "warning"))

    grafana = sub.add_parser("grafana", help="load the dashboards and datasources into a Grafana you already run")
    grafana_sub = grafana.add_subparsers(dest="action", required=True)
    push = grafana_sub.add_parser("push", help="create or update the datasources (by uid) and the dashboards (overwrite, folder flowprobe)")
    push.add_argument("--url", default=os.environ.get("GRAFANA_URL", "http://127.0.0.1:3000"), help="Grafana (default $GRAFANA_URL or http://127.0.0.1:3000)")
    credentials = push.add_mutually_exclusive_group()
    credentials.add_argument("--token-env", default="GRAFANA_TOKEN", help="environment variable holding a service account token (default GRAFANA_TOKEN)")
    credentials.add_argument("--user", help="log in as this user instead, with the password from --password-env")
    push.add_argument("--password-env", default="GRAFANA_PASSWORD", help="environment variable holding --user's password (default GRAFANA_PASSWORD)")
    push.add_argument("--dashboards", type=Path, default=Path("grafana/dashboards"), help="dashboard JSON files (default grafana/dashboards)")
    push.add_argument("--datasources", type=Path, default=Path("provisioning/grafana/datasources"), help="datasource provisioning files (default provisioning/grafana/datasources)")
    for kind in ("prometheus", "alertmanager", "influxdb"):
        push.add_argument(f"--{kind}-url", help=f"URL for the {kind} datasource(s), as your Grafana reaches it (default: the provisioned one)")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    return parser


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(*args.paths, environments=args.environments)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"FAILED: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"SUCCESS: {len(config.workflows)} workflow(s), {len(config.pairs())} (workflow, env) pair(s) are valid")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from collector import config

    schema = config.environments_json_schema() if args.environments else config.json_schema()
    print(json.dumps(schema, indent=2))
    return 0


async def _run_once(service: Service) -> int:
    results = await asyncio.gather(*(service.run_pair(wf, env) for wf, env in service.selected(service.config)))
    failed = 0
    for result in results:
        if result is None:
            continue
        print(json.dumps(result.to_dict(), separators=(",", ":")))
        failed += result.outcome in ("failure", "error")
    service.store.flush()
    service.store.close()
    await service.engine.close()
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    from collector.service import Service

    configure_logging(args.log_level)
    try:
        service = Service([args.config], data_dir=args.data_dir, envs=args.envs, shard=args.shard, grace=args.grace, watch=args.watch)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"flowprobe: {exc}", file=sys.stderr)
        return 1
    from collector.service import run_event_loop

    if args.once:
        return run_event_loop(_run_once(service))
    try:
        run_event_loop(service.serve(*args.listen))
    except OSError as exc:
        print(f"flowprobe: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo
    from collector.service import run_event_loop

    configure_logging(args.log_level)
    try:
        run_event_loop(run_demo(config=args.config, listen=args.listen, target_port=args.target_port, data_dir=args.data_dir,
                                analytics_listen=args.analytics_listen))
    except (OSError, ConfigError) as exc:
        print(f"flowprobe demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _target(args: argparse.Namespace) -> int:
    from collector.demo import DEMO_EMAIL
    from collector.service import ApiServer
    from collector.target import create_app

    password = os.environ.get("FLOWPROBE_PROBE_PASSWORD")
    if not password:
        print("flowprobe target: set FLOWPROBE_PROBE_PASSWORD to the probe user's password", file=sys.stderr)
        return 1
    configure_logging(args.log_level)
    app = create_app(demo_email=os.environ.get("FLOWPROBE_PROBE_EMAIL", DEMO_EMAIL), demo_password=password)

    async def serve() -> None:
        server = ApiServer(app, *args.listen)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"flowprobe target: {exc}", file=sys.stderr)
        return 1
    return 0


def _analytics(args: argparse.Namespace) -> int:
    from analytics.worker import command

    return command(args)


def _rules(args: argparse.Namespace) -> int:
    from collector.rules import command

    return command(args)


def _alerts(args: argparse.Namespace) -> int:
    from collector.alert_cli import command

    return command(args)


def _report(args: argparse.Namespace) -> int:
    from collector.report import command

    return command(args)


def _grafana(args: argparse.Namespace) -> int:
    from collector.grafana import command

    return command(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"check": _check, "schema": _schema, "run": _run, "demo": _demo, "analytics": _analytics, "target": _target, "rules": _rules, "alerts": _alerts, "grafana": _grafana, "report": _report}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
