"""Live updates under load: 500 WebSocket clients held for a minute while 1000 workflows run.

Run from the repository root::

    .venv/bin/python -m bench.live_load            # a table (about 90 s)
    .venv/bin/python -m bench.live_load --json     # one JSON object

The same machinery as ``bench/live_latency.py`` (read its docstring for what
runs and how latency is taken), sized for load: 500 clients, each subscribed
to everything, connect while the collector starts its 1000 one-step
workflows (first runs spread over the interval), and stay connected for the
window. Figures:

- clients dropped: closed with 1013 because they fell ``--queue-size`` events
  behind. The clients here keep up, so anything but 0 is a finding; the
  client closes by code say what the clients saw.
- run events delivered against expected (runs in the window times clients
  still connected), and their latency percentiles over every delivery.
- server RSS: the collector process before the clients connect, with them
  connected, and its peak during the window; per client is the difference
  divided by the clients.
- collector core used: the collector process's CPU (probes, history, API and
  every client's sends) over the window; with more than about 90% the
  collector is the limit, not the network.

With permessage-deflate (browsers offer it, and so do these clients) the
server compresses every message once per client; ``--no-compression`` shows
the cost of that.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.live_latency import Setup, parse, run  # noqa: E402

__all__ = ["main"]

DEFAULTS = Setup(clients=500, workflows=1000, interval=30.0, warmup=10.0, duration=60.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv, prog="python -m bench.live_load", doc=__doc__, defaults=DEFAULTS)
    return run(args, f"flowprobe live updates under load: {args.clients} WebSocket clients, {args.workflows} workflows")


if __name__ == "__main__":
    sys.exit(main())
