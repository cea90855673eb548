"""Deployment files: docker-compose.yml through `docker-compose config`, cluster.yaml through Ray's own
cluster-launcher schema, and the Dockerfile's base switch. No Docker engine or SSH is needed."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "docker-compose.yml"
TOKENS = {"RAY_AUTH_TOKEN": "ray-token-for-the-test", "POPVAE_API_TOKEN": "api-token-for-the-test"}


def _compose_config(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose); cannot validate the compose file")
    env = {k: v for k, v in os.environ.items() if k not in TOKENS} | extra_env
    return subprocess.run([binary, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def services() -> dict:
    done = _compose_config(TOKENS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def _published(service: dict) -> dict[int, str | None]:
    """Published port -> host address it binds (None: all interfaces), from either port syntax."""
    out: dict[int, str | None] = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out[int(port["published"])] = port.get("host_ip")
        else:
            parts = str(port).split("/")[0].split(":")
            out[int(parts[-2])] = parts[0] if len(parts) == 3 else None
    return out


def test_compose_config_passes_with_topology(services: dict) -> None:
    assert set(services) == {"ray-head", "ray-worker", "status"}
    assert "--head" in services["ray-head"]["command"] and "ray-head:6379" in services["ray-worker"]["command"]
    assert "popvae serve" in services["status"]["command"]
    for svc in services.values():
        assert svc["shm_size"] and any(v.startswith("runs:/runs") for v in svc["volumes"])


def test_dashboard_client_and_service_ports_are_loopback_only(services: dict) -> None:
    head, status = _published(services["ray-head"]), _published(services["status"])
    assert head == {6379: None, 8265: "127.0.0.1", 10001: "127.0.0.1"}
    assert status == {8000: "127.0.0.1"}
    assert "ports" not in services["ray-worker"] and "container_name" not in services["ray-worker"]  # scalable


def test_every_service_has_the_same_ray_auth(services: dict) -> None:
    for svc in services.values():
        assert svc["environment"]["RAY_AUTH_MODE"] == "token"
        assert svc["environment"]["RAY_AUTH_TOKEN"] == TOKENS["RAY_AUTH_TOKEN"]
    assert services["status"]["environment"]["POPVAE_API_TOKEN"] == TOKENS["POPVAE_API_TOKEN"]


@pytest.mark.parametrize("missing", sorted(TOKENS))
def test_compose_refuses_to_run_without_tokens(missing: str) -> None:
    done = _compose_config({k: v for k, v in TOKENS.items() if k != missing})
    assert done.returncode != 0 and missing in done.stderr


def test_cluster_yaml_validates_against_rays_schema_as_written() -> None:
    """Ray's own ray/autoscaler/ray-schema.json, before Ray's prepare_config fills anything in: no legacy keys."""
    import json

    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster" / "cluster.yaml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert errors == []


def test_cluster_yaml_is_a_valid_on_prem_launcher_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] == "HEAD_IP" and config["provider"]["worker_ips"] == ["WORKER_IP_1", "WORKER_IP_2"]
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    assert config["docker"]["image"].startswith("popvae:") and config["file_mounts"]["/opt/popvae"] == "."
    assert any("pip install" in c and "-e /opt/popvae" in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in " ".join(config["docker"]["run_options"])


def test_dockerfile_selects_cpu_or_cuda_base() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "ARG BASE=cpu" in text and "FROM base-${BASE}" in text
    assert "AS base-cpu" in text and "AS base-cuda" in text
