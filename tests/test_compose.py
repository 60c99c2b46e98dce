"""docker compose cannot run here (no engine); check the stack file statically and its Prometheus config with promtool."""

from __future__ import annotations

import subprocess

import yaml

from tests.helpers import REPO, require_binary


def test_every_service_is_pinned_healthchecked_and_restarts() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"target", "collector", "prometheus"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: image tag must be pinned"
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: publish on loopback only"


def test_prometheus_config_is_valid() -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "config", str(REPO / "provisioning/prometheus/prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
