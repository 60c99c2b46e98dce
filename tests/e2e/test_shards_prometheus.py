"""Two collectors with `--shard 0/2` and `--shard 1/2`, one real Prometheus scraping both.

PromQL over both instances sees every (workflow, env) pair of the shipped
workflows exactly once: configured once (`flowprobe_workflow_info`), run once
(`flowprobe_workflow_runs_total`), and on the collector its shard names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.config import load_config
from collector.scheduler import Pair, Shard
from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL,
    PROBE_PASSWORD,
    fast_copy,
    free_port,
    probe_environment,
    require_binary,
    running_process,
    serve_in_thread,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENVS = ("prod", "staging", "dev")
SHARDS = 2


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def per_pair(prometheus: str, expr: str) -> dict[Pair, float]:
    """The value of `expr` for each (workflow, env) pair it returns."""
    return {(r["metric"]["workflow"], r["metric"]["env"]): float(r["value"][1]) for r in query(prometheus, expr)}


def both_up(prometheus: str) -> set[str] | None:
    """The instances Prometheus scrapes, once it has scraped every collector successfully."""
    up = {r["metric"]["instance"]: r["value"][1] for r in query(prometheus, 'up{job="flowprobe"}')}
    return set(up) if len(up) == SHARDS and set(up.values()) == {"1"} else None


@pytest.fixture
def targets() -> Iterator[dict[str, str]]:
    """One demo target per environment, so the environments' runs do not share a shop."""
    with ExitStack() as stack:
        yield {env: stack.enter_context(serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)))
               for env in ENVS}


def test_every_pair_is_run_by_exactly_one_of_two_shards(tmp_path: Path, targets: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    prometheus = require_binary("prometheus")
    config = fast_copy(tmp_path / "workflows", every="2s")
    env = probe_environment(targets)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    every_pair = {(workflow.name, e) for workflow, e in load_config(config).pairs()}
    assert len(every_pair) == 18  # 6 workflows x 3 environments

    addresses = [f"127.0.0.1:{free_port()}" for _ in range(SHARDS)]
    prom_url = f"http://127.0.0.1:{free_port()}"
    static = ", ".join(f"'{address}'" for address in addresses)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: flowprobe\n    static_configs: [{{targets: [{static}]}}]\n"
    )
    with ExitStack() as stack:
        for index, address in enumerate(addresses):
            args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--shard", f"{index}/{SHARDS}",
                    "--listen", address, "--data-dir", str(tmp_path / f"data-{index}"), "--grace", "1", "--no-watch"]
            stack.enter_context(running_process(args, env=env, log=tmp_path / f"collector-{index}.log"))
        prom_args = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address={prom_url.removeprefix('http://')}"]
        stack.enter_context(running_process(prom_args, log=tmp_path / "prometheus.log"))

        def logs() -> str:
            return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in sorted(tmp_path.glob("*.log")))

        try:
            instances = wait_until(lambda: both_up(prom_url), timeout=30, interval=0.25, what="Prometheus to scrape both collectors")
            # Every pair has run somewhere: the union of the shards is complete...
            wait_until(lambda: set(per_pair(prom_url, "count by (workflow, env) (flowprobe_workflow_runs_total)")) == every_pair,
                       timeout=30, interval=0.25, what="runs of every pair in Prometheus")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None

        # ...and no pair is configured or run by both collectors.
        configured = per_pair(prom_url, "count by (workflow, env) (flowprobe_workflow_info)")
        assert configured == dict.fromkeys(every_pair, 1.0), logs()
        instances_running = per_pair(prom_url, "count by (workflow, env) (group by (workflow, env, instance) (flowprobe_workflow_runs_total))")
        assert instances_running == dict.fromkeys(every_pair, 1.0), logs()
        assert query(prom_url, "sum(flowprobe_workflow_info)")[0]["value"][1] == str(len(every_pair))

        # Each collector runs exactly the pairs its --shard names, and both have some.
        assert instances == set(addresses)
        by_instance: dict[str, set[Pair]] = {address: set() for address in addresses}
        for series in query(prom_url, "group by (instance, workflow, env) (flowprobe_workflow_runs_total)"):
            by_instance[series["metric"]["instance"]].add((series["metric"]["workflow"], series["metric"]["env"]))
        for index, address in enumerate(addresses):
            assert by_instance[address] == {pair for pair in every_pair if Shard(index, SHARDS).owns(pair)}
            assert by_instance[address], f"shard {index}/{SHARDS} got no pair"
