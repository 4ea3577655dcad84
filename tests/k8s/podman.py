"""Podman for the image test: its own containers.conf, a stand-in base image, the build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDIN = "localhost/kvstore-test-python:bookworm"
IMAGE = "localhost/kvstore:test"
# These machines refuse crun's cgroup set-up and the default ulimits.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http(method: str, url: str, body: bytes | None = None, timeout: float = 15) -> Response:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, dump: Callable[[], str]
) -> None:
    """Poll `check` until it holds; on timeout fail with `dump()` (the containers' logs)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{dump()}")
        time.sleep(0.2)


class Podman:
    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("podman")
        assert exe, "the image test needs podman (apt-get install podman buildah runc)"
        self.exe = exe
        self.workdir = workdir
        (workdir / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(workdir / "containers.conf")}

    def __call__(self, *args: str, timeout: float = 120, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            [self.exe, *args], input=stdin, capture_output=True, env=self.env, timeout=timeout
        )
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            err = result.stderr.decode(errors="replace")
            raise AssertionError(
                f"podman {' '.join(args)} failed ({result.returncode}):\n{out}{err}"
            )
        return out

    def ok(self, *args: str) -> bool:
        cmd = [self.exe, *args]
        return subprocess.run(cmd, capture_output=True, env=self.env, timeout=60).returncode == 0

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        found: list[dict[str, object]] = json.loads(self(kind, "inspect", name))
        return found[0]

    def logs(self, *names: str) -> str:
        parts = []
        for name in names:
            out = subprocess.run(
                [self.exe, "logs", name], capture_output=True, env=self.env, timeout=60
            )
            text = (out.stdout + out.stderr).decode(errors="replace")
            parts.append(f"--- logs of {name} ---\n{text[-6000:]}")
        return "\n".join(parts)

    def standin_base(self) -> str:
        """`python:3.12-slim` where a registry is reachable; else a Debian bookworm stand-in."""
        chosen = os.environ.get("KVSTORE_TEST_BASE_IMAGE")
        if chosen:
            return chosen
        if self.ok("image", "exists", STANDIN):
            return STANDIN
        assert shutil.which("debootstrap") and os.geteuid() == 0, (
            "no base image: run as root with debootstrap installed, or set "
            "KVSTORE_TEST_BASE_IMAGE=python:3.12-slim where a registry is reachable"
        )
        rootfs = self.workdir / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True, timeout=600
        ).stdout
        self("import", "--change", 'CMD ["python3"]', "-", STANDIN, stdin=tar, timeout=600)
        shutil.rmtree(rootfs)
        return STANDIN

    def build(self, base: str) -> str:
        """Build the Dockerfile; pip in the build gets this machine's CA bundle and index."""
        pip_conf = self.workdir / "pip.conf"
        pip_conf.write_text(pip_config())
        mounts = [
            f"--volume={host_ca_bundle()}:/etc/ssl/certs/ca-certificates.crt:ro",
            f"--volume={pip_conf}:/etc/pip.conf:ro",
        ]
        # No layer cache and no older copy of the image: repeated runs leave nothing behind.
        self.ok("rmi", IMAGE)
        base_arg = f"--build-arg=BASE_IMAGE={base}"
        self("build", "--layers=false", base_arg, *mounts, "-t", IMAGE, str(REPO), timeout=1800)
        return IMAGE


def host_ca_bundle() -> str:
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise AssertionError("no CA bundle found for pip inside the build")


def pip_config() -> str:
    """A pip.conf for the build: the CA bundle, and this machine's index if it has its own."""
    lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    index = re.findall(r"^\S*\.index-url='(https?://[^']+)'$", listed, re.MULTILINE)
    if index:
        lines.append(f"index-url = {index[-1]}")
    return "\n".join(lines) + "\n"
