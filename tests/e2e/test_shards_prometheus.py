"""Two collectors with `--shard 0/2` and `--shard 1/2` under the two topologies of DEPLOYMENT.md.

- One real Prometheus server scrapes both collectors.
- A Prometheus agent scrapes both and remote-writes into VictoriaMetrics,
  which is queried with PromQL as Mimir, Thanos or a VictoriaMetrics cluster would be.

Either way, PromQL over both instances sees every (workflow, env) pair of the
shipped workflows exactly once: configured once (`flowprobe_workflow_info`),
run once (`flowprobe_workflow_runs_total`), and on the collector its shard names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.config import load_config
from collector.scheduler import Pair, Shard
from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, fast_copy, free_port, probe_environment, prometheus_config, require_binary, running_process,
    running_prometheus, serve_in_thread, wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENVS = ("prod", "staging", "dev")
SHARDS = 2


@dataclass(frozen=True)
class Shards:
    addresses: list[str]  # host:port of collector i, the --shard i/2
    pairs: set[Pair]  # every (workflow, env) of the config they share
    logs: Path

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shards]:
    """Two collectors, one shard each, against one demo target per environment (so no two share a shop)."""
    tmp = tmp_path_factory.mktemp("shards")
    config = fast_copy(tmp / "workflows", every="2s")
    with ExitStack() as stack:
        targets = {env: stack.enter_context(serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)))
                   for env in ENVS}
        env = probe_environment(targets)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            pairs = {(workflow.name, e) for workflow, e in load_config(config).pairs()}
        assert len(pairs) == 18  # 6 workflows x 3 environments
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(SHARDS)]
        for index, address in enumerate(addresses):
            args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--shard", f"{index}/{SHARDS}",
                    "--listen", address, "--data-dir", str(tmp / f"data-{index}"), "--grace", "1", "--no-watch"]
            stack.enter_context(running_process(args, env=env, log=tmp / f"collector-{index}.log"))
        yield Shards(addresses, pairs, tmp)


def querier(url: str) -> Callable[[str], list[dict[str, Any]]]:
    """Instant PromQL queries against the Prometheus HTTP API at `url` (Prometheus or VictoriaMetrics)."""

    def query(expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    return query


def assert_every_pair_once(shards: Shards, query: Callable[[str], list[dict[str, Any]]]) -> None:
    def per_pair(expr: str) -> dict[Pair, float]:
        return {(r["metric"]["workflow"], r["metric"]["env"]): float(r["value"][1]) for r in query(expr)}

    try:
        # Every pair has run somewhere: the union of the shards is complete...
        wait_until(lambda: set(per_pair("count by (workflow, env) (flowprobe_workflow_runs_total)")) == shards.pairs,
                   timeout=40, interval=0.25, what="runs of every pair")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{shards.tails()}") from None

    # ...and no pair is configured or run by both collectors.
    assert per_pair("count by (workflow, env) (flowprobe_workflow_info)") == dict.fromkeys(shards.pairs, 1.0), shards.tails()
    running = per_pair("count by (workflow, env) (count by (workflow, env, instance) (flowprobe_workflow_runs_total))")
    assert running == dict.fromkeys(shards.pairs, 1.0), shards.tails()

    # Each collector runs exactly the pairs its --shard names, and both have some.
    by_instance: dict[str, set[Pair]] = {}
    for series in query("count by (instance, workflow, env) (flowprobe_workflow_runs_total)"):
        by_instance.setdefault(series["metric"]["instance"], set()).add((series["metric"]["workflow"], series["metric"]["env"]))
    assert set(by_instance) == set(shards.addresses)
    for index, address in enumerate(shards.addresses):
        assert by_instance[address] == {pair for pair in shards.pairs if Shard(index, SHARDS).owns(pair)}
        assert by_instance[address], f"shard {index}/{SHARDS} got no pair"


def test_one_prometheus_scraping_both_shards_sees_every_pair_once(shards: Shards, tmp_path: Path) -> None:
    with running_prometheus(tmp_path, prometheus_config({"flowprobe": shards.addresses}), log=shards.logs / "prometheus.log") as url:
        assert_every_pair_once(shards, querier(url))


def test_a_prometheus_agent_remote_writing_both_shards_sees_every_pair_once(shards: Shards, tmp_path: Path) -> None:
    victoria = require_binary("victoria-metrics")
    vm = f"http://127.0.0.1:{free_port()}"
    vm_args = [victoria, f"-httpListenAddr={vm.removeprefix('http://')}", f"-storageDataPath={tmp_path / 'vm'}",
               "-search.latencyOffset=0s", "-search.disableCache"]
    # Agent mode: scrape and remote-write, no local queries (Prometheus 2.x flag; 3.x spells it --agent).
    config = prometheus_config({"flowprobe": shards.addresses}, remote_write=f"{vm}/api/v1/write")
    with running_process(vm_args, log=shards.logs / "victoria-metrics.log"), \
            running_prometheus(tmp_path, config, agent=True, log=shards.logs / "agent.log"):
        wait_until(lambda: httpx.get(f"{vm}/health", timeout=1).text.strip() == "OK", timeout=15, what="VictoriaMetrics")
        assert_every_pair_once(shards, querier(vm))
