"""The deployment files stay in step with the code: their gateway settings validate, their
health checks point at /readyz and /healthz, the image's command line parses, and the drain
time fits inside the grace periods, and both replicas are wired to one Redis. (The files are
not run here.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from semroute.cli.app import make_parser
from semroute.config import GatewaySettings, load_gateway_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def k8s(name: str = "semroute-gateway") -> dict[str, Any]:
    """The manifest's objects named `name`, by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text())
            if d["metadata"]["name"] == name}


def test_gateway_settings_in_every_file_validate() -> None:
    compose_settings = load_gateway_config(DEPLOY / "gateway.yaml")
    configmap = GatewaySettings.model_validate(
        yaml.safe_load(k8s()["ConfigMap"]["data"]["gateway.yaml"]))
    assert compose_settings.drain_seconds == configmap.drain_seconds == 30


def test_kubernetes_probes_and_drain() -> None:
    spec = k8s()["Deployment"]["spec"]["template"]["spec"]
    gateway = spec["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["terminationGracePeriodSeconds"] > 30 + 5  # drain + preStop
    assert k8s()["Deployment"]["spec"]["replicas"] == 2


def test_compose_runs_two_replicas_checked_on_readyz() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    replicas = [s for name, s in compose["services"].items() if name.startswith("gateway")]
    assert len(replicas) == 2
    for service in replicas:
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert int(service["stop_grace_period"].rstrip("s")) > 30


def test_the_image_command_line_parses() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entry = next(ln for ln in dockerfile.splitlines() if ln.startswith("ENTRYPOINT"))
    argv = yaml.safe_load(entry.removeprefix("ENTRYPOINT"))[1:]  # a JSON list
    args = make_parser().parse_args([*argv, "--config", "/etc/semroute/gateway.yaml"])
    assert (args.verb, args.host, args.port, args.index) == ("serve", "0.0.0.0", 8080,
                                                            "indexes/default")
    assert "/readyz" in dockerfile


def test_the_replicas_share_state_through_the_redis_service() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if name.startswith("gateway"):
            assert service["environment"]["SEMROUTE_REDIS_URL"] == "redis://redis:6379/0"
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis-server" in compose["services"]["redis"]["command"]
    container = k8s()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    redis = k8s("semroute-redis")
    port = redis["Service"]["spec"]["ports"][0]["port"]
    assert env["SEMROUTE_REDIS_URL"] == f"redis://semroute-redis:{port}/0"
    assert redis["Deployment"]["spec"]["template"]["metadata"]["labels"] == \
        redis["Service"]["spec"]["selector"]
    args = make_parser().parse_args(["serve", "--redis", env["SEMROUTE_REDIS_URL"]])
    assert args.redis == "redis://semroute-redis:6379/0"
