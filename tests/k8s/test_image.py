"""The container image, built and run with podman (opt-in: KV_IMAGE_TEST=1, as root).

Pods kv-0..kv-2 are containers on one podman network whose DNS (aardvark) answers the names the
headless Service gives them in Kubernetes, `kv-N.kv.default.svc.cluster.local`, through network
aliases. Each has its own named volume at /data and runs as it would in the StatefulSet: read-only
root file system, no capabilities, no privilege escalation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from .podman import Podman, Response, http, wait_until

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(
        os.environ.get("KV_IMAGE_TEST") != "1", reason="builds an image: set KV_IMAGE_TEST=1"
    ),
]
DOMAIN = "kv.default.svc.cluster.local"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    return podman.build(podman.standin_base())


class Pods:
    """Containers named like the StatefulSet's pods, on their own network and volumes."""

    def __init__(self, podman: Podman, image: str, prefix: str) -> None:
        self.podman, self.image, self.prefix = podman, image, prefix
        self.network = f"{prefix}-net"
        self.started: set[int] = set()
        podman("network", "create", self.network)

    def container(self, ordinal: int) -> str:
        return f"{self.prefix}-kv-{ordinal}"

    def start(self, ordinal: int) -> None:
        pod = f"kv-{ordinal}"
        self.podman(
            "run", "--detach", "--name", self.container(ordinal), "--hostname", pod,
            "--network", self.network, "--network-alias", f"{pod}.{DOMAIN}",
            "--network-alias", DOMAIN, "--publish", "127.0.0.1::8080",
            "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
            "--volume", f"{self.prefix}-data-{pod}:/data",
            "--env", f"POD_NAME={pod}", "--env", "POD_NAMESPACE=default",
            "--env", "KV_SHUTDOWN_TIMEOUT=5", self.image,
        )  # fmt: skip
        self.started.add(ordinal)

    def url(self, ordinal: int) -> str:
        host_port = self.podman("port", self.container(ordinal), "8080").split()[0]
        return f"http://{host_port}"

    def dump(self) -> str:
        return self.podman.logs(*(self.container(i) for i in sorted(self.started)))

    def wait(self, ordinal: int, path: str = "/readyz", timeout: float = 60) -> None:
        def answers() -> bool:
            return http("GET", self.url(ordinal) + path, timeout=3).status == 200

        wait_until(f"kv-{ordinal} {path}", answers, timeout, self.dump)

    def kill(self, ordinal: int) -> None:
        """Like `kubectl delete pod --grace-period=0 --force`: SIGKILL, container gone."""
        self.podman("rm", "--force", "--time", "0", self.container(ordinal))

    def close(self) -> None:
        for ordinal in self.started:
            self.podman.ok("rm", "--force", "--time", "0", self.container(ordinal))
            self.podman.ok("volume", "rm", "--force", f"{self.prefix}-data-kv-{ordinal}")
        self.podman.ok("network", "rm", "--force", self.network)


@pytest.fixture
def pods(podman: Podman, image: str, request: pytest.FixtureRequest) -> Iterator[Pods]:
    found = Pods(podman, image, f"kvtest-{os.getpid()}-{request.node.name[5:20]}")
    yield found
    found.close()


def put(url: str, key: str, value: bytes) -> Response:
    r = http("PUT", f"{url}/v1/kv/{key}", value)
    assert r.status in (200, 201), (r.status, r.body)
    return r


def test_image_is_locked_down(podman: Podman, image: str) -> None:
    config = podman.inspect("image", image)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert (config["Entrypoint"], config["Cmd"]) == (["kvstore"], ["serve"])
    assert "8080/tcp" in config["ExposedPorts"] and "/data" in config["Volumes"]
    probe = (
        "import os, shutil, json, kvstore.server.app\n"
        "try:\n open('/opt/kvstore/x', 'w')\n writable = True\n"
        "except OSError:\n writable = False\n"
        "print(json.dumps({'uid': os.getuid(), 'root_writable': writable,"
        " 'tools': [t for t in ('gcc', 'cc', 'make') if shutil.which(t)],"
        " 'venv_pip': os.path.exists('/opt/kvstore/bin/pip')}))"
    )
    out = podman("run", "--rm", "--read-only", "--entrypoint", "python3", image, "-c", probe)
    facts = json.loads(out)
    assert facts == {"uid": 10001, "root_writable": False, "tools": [], "venv_pip": False}, facts


def test_one_pod_serves_stops_gracefully_and_keeps_its_volume(pods: Pods) -> None:
    pods.start(0)
    pods.wait(0, "/livez")
    pods.wait(0, "/readyz")
    first = put(pods.url(0), "greeting", b"hello")
    seq = int(first.headers["X-KV-Seq"])
    # SIGTERM to PID 1 in the container: it must drain and exit 0, not wait for SIGKILL.
    pods.podman("stop", "--time", "30", pods.container(0))
    state = pods.podman.inspect("container", pods.container(0))["State"]
    assert isinstance(state, dict) and state["ExitCode"] == 0, pods.dump()
    pods.podman("start", pods.container(0))
    pods.wait(0)
    pods.kill(0)
    pods.start(0)  # a new container on the same volume, as a re-created pod
    pods.wait(0)
    got = http("GET", f"{pods.url(0)}/v1/kv/greeting")
    assert (got.status, got.body) == (200, b"hello"), pods.dump()
    after = put(pods.url(0), "greeting", b"again")
    assert int(after.headers["X-KV-Seq"]) == seq + 1


def digest(url: str) -> tuple[int, str]:
    doc = json.loads(http("GET", f"{url}/v1/digest").body)
    return int(doc["seq"]), str(doc["digest"])


def test_three_pods_replicate_and_a_deleted_pod_returns(pods: Pods) -> None:
    for ordinal in range(3):  # OrderedReady
        pods.start(ordinal)
        pods.wait(ordinal)
    seq = int(put(pods.url(0), "k1", b"v1").headers["X-KV-Seq"])
    for ordinal in (1, 2):
        got = http("GET", f"{pods.url(ordinal)}/v1/kv/k1?min_seq={seq}&timeout=10")
        assert (got.status, got.body) == (200, b"v1"), pods.dump()
        assert got.headers["X-KV-Served-By"] == f"kv-{ordinal}"
    forwarded = put(pods.url(2), "k2", b"v2")
    assert forwarded.headers["X-KV-Served-By"] == "kv-0"

    # kv-1 is deleted and misses k3; then the manager goes too. kv-1 comes back with nobody to
    # copy from: what it serves is on its volume.
    pods.kill(1)
    seq = int(put(pods.url(0), "k3", b"v3").headers["X-KV-Seq"])
    pods.kill(0)
    pods.start(1)
    pods.wait(1, "/livez")

    def serves_k1() -> bool:
        got = http("GET", f"{pods.url(1)}/v1/kv/k1", timeout=3)
        return (got.status, got.body) == (200, b"v1")

    wait_until("kv-1 to serve k1 from its volume", serves_k1, 30, pods.dump)
    assert http("GET", f"{pods.url(1)}/v1/kv/k3").status == 404
    # The manager returns on its volume, and kv-1 resumes by itself.
    pods.start(0)
    pods.wait(0)
    for key, value in (("k1", b"v1"), ("k2", b"v2"), ("k3", b"v3")):
        got = http("GET", f"{pods.url(1)}/v1/kv/{key}?min_seq={seq}&timeout=20")
        assert (got.status, got.body) == (200, value), pods.dump()

    def converged() -> bool:
        return len({digest(pods.url(i)) for i in range(3)}) == 1

    wait_until("the three digests to agree", converged, 30, pods.dump)
