"""`flowprobe alerts`: list, show, acknowledge and resolve alerts through the collector's API.

    flowprobe alerts list [--status S] [--severity S] [--workflow W] [--env E] [--json]
    flowprobe alerts show ID
    flowprobe alerts ack ID -m COMMENT
    flowprobe alerts resolve ID -m COMMENT

The token is read from the environment variable named by --token-env
(default FLOWPROBE_TOKEN), never from the command line, where other users
could read it in the process list. Exit status: 0 done, 1 refused or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import httpx

__all__ = ["command"]

PAGE = 100


class _Failed(Exception):
    pass


def _when(value: str | None) -> str:
    """An API time (RFC 3339, UTC) as 2026-03-01 12:00:00Z."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%SZ")
    except ValueError:
        return value


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise _Failed(f"cannot reach the collector at {client.base_url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        raise _Failed(f"{response.status_code}: {error or response.text.strip()[:300] or response.reason_phrase}")
    return body


def _list(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> None:
    params = {name: getattr(args, name) for name in ("status", "severity", "workflow", "env") if getattr(args, name)}
    page = _request(client, "GET", "/api/alerts", params={**params, "limit": PAGE})
    items = page["items"]
    if args.json:
        out.write(json.dumps(items, indent=2) + "\n")
        return
    if not items:
        out.write("no alerts\n")
        return
    rows = [["ID", "STATUS", "SEVERITY", "ALERT", "WORKFLOW", "ENV", "STARTED", "ESCALATED TO", "ACKNOWLEDGED BY"]]
    for alert in items:
        rows.append(
            [
                str(alert["id"]),
                alert["status"],
                alert["severity"] or "-",
                alert["alertname"] or "-",
                alert["workflow"] or "-",
                alert["env"] or "-",
                _when(alert["starts_at"]),
                alert["escalations"][-1] if alert["escalations"] else "-",
                alert["acknowledged_by"] or "-",
            ]
        )
    out.write(_table(rows))
    if page.get("next_before") is not None:
        out.write(f"(the newest {PAGE}; narrow with --status, --severity, --workflow or --env)\n")


def _show(alert: dict[str, Any], out: TextIO) -> None:
    fields = [
        ("id", str(alert["id"])),
        ("status", alert["status"]),
        ("alert", alert["alertname"]),
        ("started", _when(alert["starts_at"])),
        ("ended", _when(alert["ends_at"])),
        ("acknowledged", f"{_when(alert['acknowledged_at'])} by {alert['acknowledged_by']}" if alert["acknowledged_by"] else "-"),
        ("resolved", f"{_when(alert['resolved_at'])} by {alert['resolved_by']}" if alert["resolved_by"] else "-"),
        ("silence", alert["silence_id"] or "-"),
        ("escalation", " -> ".join(alert["escalations"]) or "-"),
        ("source", alert["generator_url"] or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        out.write(f"{name.ljust(width)}  {value}\n")
    for title, values in (("labels", alert["labels"]), ("annotations", alert["annotations"])):
        out.write(f"\n{title}:\n")
        for key, value in sorted(values.items()):
            out.write(f"  {key}={value}\n")
    out.write("\nhistory:\n")
    rows = [["TIME", "ACTOR", "ACTION", "FROM", "TO", "COMMENT"]]
    for event in alert["events"]:
        rows.append([_when(event["at"]), event["actor"], event["action"], event["from_status"] or "-", event["to_status"], event["comment"] or ""])
    out.write(_table(rows, indent="  "))


def command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    token = os.environ.get(args.token_env, "")
    if not token:
        err.write(f"flowprobe alerts: set {args.token_env} to an API token of the collector (alerting.tokens in flowprobe.yaml)\n")
        return 1
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=30.0) as client:
            if args.action == "list":
                _list(client, args, out)
            elif args.action == "show":
                _show(_request(client, "GET", f"/api/alerts/{args.id}"), out)
            else:
                verb = "acknowledge" if args.action == "ack" else "resolve"
                alert = _request(client, "POST", f"/api/alerts/{args.id}/{verb}", json={"comment": args.comment})
                done = f"alert {alert['id']} {alert['alertname']} is {alert['status']}"
                if verb == "acknowledge" and alert.get("silence_id"):
                    done += f" (silence {alert['silence_id']} in Alertmanager)"
                out.write(done + "\n")
    except _Failed as exc:
        err.write(f"flowprobe alerts {args.action}: {exc}\n")
        return 1
    return 0
