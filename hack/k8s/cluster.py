#!/usr/bin/env python3
"""A one-node Kubernetes made of local processes, to run kvstore's manifests on for real.

    python3 hack/k8s/cluster.py build   # once: the components from their Go modules, cached
    python3 hack/k8s/cluster.py up      # start it; writes the kubeconfig it prints
    python3 hack/k8s/cluster.py down    # stop everything, remove what `up` made
    python3 hack/k8s/cluster.py status  # which components run, and the kubeconfig's path

The components are built from `k8s.io/kubernetes` at one release (hack/k8s/go/go.mod), etcd from
`go.etcd.io/etcd/server/v3` at the version that release requires, and CoreDNS from its module
with only the plugins a cluster's DNS needs (hack/k8s/coredns). They are cached under
~/.cache/kvstore-k8s/<release>/bin (KVSTORE_K8S_CACHE moves it), so later runs start in seconds.

`up` runs, as root: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback
and on the node's own address (10.213.0.1 on a bridge it creates, as kind's node container would
have); containerd + runc with the CNI bridge plugin (Debian's containerd, runc and
containernetworking-plugins) under the kubelet; kube-proxy (iptables); CoreDNS serving
cluster.local on the node address (the pods' nameserver); a default StorageClass `standard` whose
provisioner (hack/k8s/go/cmd/kv-provisioner) gives each claim a directory. It builds the kvstore
image with podman (the image test's path, tests/k8s/podman.py) and imports it into containerd's
k8s.io namespace with two images no registry serves here: the pod sandbox's pause image and a
kubectl image for the chaos Job. Certificates and kubeconfigs are generated with openssl.

No traffic leaves the machine: every address is loopback, the node bridge or the pod bridge.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RELEASE = "v1.34.4"  # k8s.io/kubernetes in hack/k8s/go/go.mod
ETCD_VERSION = "v3.6.4"  # what that release requires (go.sum pins it)
COREDNS_VERSION = "v1.13.1"  # hack/k8s/coredns/go.mod
CACHE = Path(os.environ.get("KVSTORE_K8S_CACHE", Path.home() / ".cache/kvstore-k8s"))
BIN = CACHE / RELEASE / "bin"
STATE = Path(os.environ.get("KVSTORE_K8S_STATE", CACHE / "cluster"))
KUBECONFIG = STATE / "kubeconfig"

NODE = "kv-node"
NODE_BRIDGE, NODE_IP, NODE_CIDR = "kvk8s0", "10.213.0.1", "10.213.0.1/24"
POD_BRIDGE, POD_SUBNET, POD_GATEWAY = "kvk8s-cni0", "10.214.0.0/24", "10.214.0.1"
SERVICE_CIDR, KUBERNETES_SVC_IP = "10.215.0.0/24", "10.215.0.1"
APISERVER = f"https://{NODE_IP}:6443"
ETCD_CLIENT, ETCD_PEER = "http://127.0.0.1:23790", "http://127.0.0.1:23800"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
KUBECTL_IMAGE = f"registry.k8s.io/kubectl:{RELEASE}"
KVSTORE_IMAGE = "docker.io/library/kvstore:0.1.0"  # what `image: kvstore:0.1.0` names

K8S_PROGRAMS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
    "kv-provisioner": "./cmd/kv-provisioner",
    "pause": "./cmd/pause",
}
PROGRAMS = [*K8S_PROGRAMS, "coredns"]
APT_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "podman": "podman",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "debootstrap": "debootstrap",
}


def log(msg: str) -> None:
    print(f"[k8s {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(*args: str | Path, check: bool = True, timeout: float = 600, **kw: object) -> str:
    argv = [str(a) for a in args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return str(result.stdout)


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.5)
    tails = "\n".join(
        f"--- {n}.log (last lines) ---\n{tail(STATE / 'logs' / f'{n}.log')}" for n in logs
    )
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}\n{tails}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return str(e)


# --- build -------------------------------------------------------------------------------


def built() -> bool:
    return all((BIN / p).is_file() for p in PROGRAMS)


def build(force: bool = False) -> None:
    if built() and not force:
        log(f"components {RELEASE} cached in {BIN}")
        return
    if not shutil.which("go"):
        raise SystemExit("building the components needs a Go toolchain (go >= 1.24) on PATH")
    BIN.mkdir(parents=True, exist_ok=True)
    # Two cores are shared with other work: build at the lowest priority, two packages at a time.
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOFLAGS": os.environ.get("KVSTORE_K8S_GOFLAGS", "-p=2"),
    }
    minor = RELEASE.split(".")[1]
    ldflags = " ".join(
        [
            "-s -w",
            *(
                f"-X {pkg}.gitVersion={RELEASE} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor}"
                for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            ),
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    started = time.monotonic()
    missing = [p for p in K8S_PROGRAMS if force or not (BIN / p).is_file()]
    if missing:
        log(f"building {', '.join(missing)} from k8s.io/kubernetes {RELEASE} (long the first time)")
        out = BIN / ".build"
        out.mkdir(exist_ok=True)
        go_build([K8S_PROGRAMS[p] for p in missing], HERE / "go", out, ldflags, env)
        for p in missing:
            # `go build -o dir/` names go.etcd.io/etcd/server/v3's program `server`.
            produced = out / ("server" if p == "etcd" else p)
            produced.replace(BIN / p)
        out.rmdir()
    if force or not (BIN / "coredns").is_file():
        log(f"building coredns {COREDNS_VERSION}")
        go_build(["."], HERE / "coredns", BIN / "coredns", "-s -w", env)
    log(f"built in {time.monotonic() - started:.0f}s: {BIN}")


def go_build(pkgs: list[str], module: Path, out: Path, ldflags: str, env: dict[str, str]) -> None:
    argv = ["nice", "-n", "19", "go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out)]
    if out.is_dir():
        argv[-1] = f"{out}/"
    # -v prints each package as it is compiled: the progress of a long build.
    proc = subprocess.Popen(
        [*argv, "-v", *pkgs], cwd=module, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr
    count = 0
    last = time.monotonic()
    for line in proc.stderr:
        line = line.rstrip()
        if line.startswith(("go: downloading", "#")) or " " in line:
            print(f"  {line}", flush=True)
            continue
        count += 1
        if time.monotonic() - last > 30:
            log(f"  {count} packages compiled (now {line})")
            last = time.monotonic()
    if proc.wait() != 0:
        raise SystemExit(f"go build in {module} failed")


# --- certificates and kubeconfigs --------------------------------------------------------


def pki() -> Path:
    d = STATE / "pki"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "ca.crt").exists():
        run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            d / "ca.key",
            "-out",
            d / "ca.crt",
            "-subj",
            "/CN=kvstore-k8s-ca",
        )
        run("openssl", "genrsa", "-out", d / "sa.key", "2048")
        run("openssl", "rsa", "-in", d / "sa.key", "-pubout", "-out", d / "sa.pub")
        sans = ",".join(
            [
                f"IP:{NODE_IP}",
                f"IP:{KUBERNETES_SVC_IP}",
                "IP:127.0.0.1",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        )
        cert(d, "apiserver", "/CN=kube-apiserver", sans)
        cert(d, "kubelet", f"/CN={NODE}", f"IP:{NODE_IP},DNS:{NODE},DNS:localhost")
        for name, subj in {
            "admin": "/O=system:masters/CN=kubernetes-admin",
            "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "controller-manager": "/CN=system:kube-controller-manager",
            "scheduler": "/CN=system:kube-scheduler",
            "kubelet-client": f"/O=system:nodes/CN=system:node:{NODE}",
            "proxy": "/CN=system:kube-proxy",
        }.items():
            cert(d, name, subj, None)
        for name in ("admin", "controller-manager", "scheduler", "kubelet-client", "proxy"):
            kubeconfig(d, name, STATE / f"{name}.kubeconfig")
        shutil.copy(STATE / "admin.kubeconfig", KUBECONFIG)
    return d


def cert(d: Path, name: str, subj: str, sans: str | None) -> None:
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        d / f"{name}.key",
        "-out",
        d / f"{name}.csr",
        "-subj",
        subj,
    )
    ext = d / f"{name}.ext"
    usage = "serverAuth" if sans else "clientAuth"
    ext.write_text(
        f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n" + (f"subjectAltName={sans}\n" if sans else "")
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        d / f"{name}.csr",
        "-CA",
        d / "ca.crt",
        "-CAkey",
        d / "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        d / f"{name}.crt",
        "-extfile",
        ext,
    )


def kubeconfig(d: Path, name: str, path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kvstore",
                        "cluster": {
                            "server": APISERVER,
                            "certificate-authority": str(d / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": name,
                        "user": {
                            "client-certificate": str(d / f"{name}.crt"),
                            "client-key": str(d / f"{name}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "kvstore", "context": {"cluster": "kvstore", "user": name}}],
                "current-context": "kvstore",
            },
            indent=2,
        )
    )


# --- processes ---------------------------------------------------------------------------


def start(name: str, argv: list[str | Path], env: dict[str, str] | None = None) -> None:
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    (STATE / "pids").mkdir(exist_ok=True)
    (STATE / "pids" / name).write_text(str(proc.pid))
    log(f"started {name} (pid {proc.pid}, log {logs / f'{name}.log'})")


def running(name: str) -> int | None:
    try:
        pid = int((STATE / "pids" / name).read_text())
        os.kill(pid, 0)
        # A pid file may outlive its process; a zombie of ours is not running either.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else pid
    except (OSError, ValueError):
        return None


def stop(name: str, timeout: float = 15) -> None:
    pid = running(name)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running(name):
        os.kill(pid, signal.SIGKILL)
    (STATE / "pids" / name).unlink(missing_ok=True)
    log(f"stopped {name}")


def kubectl(*args: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
    return run(
        BIN / "kubectl",
        "--kubeconfig",
        KUBECONFIG,
        *args,
        check=check,
        timeout=timeout,
        input=stdin,
    )


def https_ok(url: str, name: str) -> bool:
    d = STATE / "pki"
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    ctx.check_hostname = False
    with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
        return bool(r.status == 200)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as r:
        return bool(r.status == 200)


# --- up ----------------------------------------------------------------------------------


def preflight() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the cluster runs a kubelet and containerd: run as root")
    missing = sorted({pkg for exe, pkg in APT_PACKAGES.items() if not shutil.which(exe)})
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise SystemExit(f"missing Debian packages: apt-get install {' '.join(missing)}")
    if not built():
        raise SystemExit(f"components not built: run `{sys.argv[0]} build` first (cache: {BIN})")


def network() -> None:
    if run("ip", "link", "show", NODE_BRIDGE, check=False) == "":
        run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        run("ip", "addr", "add", NODE_CIDR, "dev", NODE_BRIDGE)
    run("ip", "link", "set", NODE_BRIDGE, "up")
    # Pods reach Services (kube-proxy's DNAT on bridged traffic) and the node's address.
    if not Path("/proc/sys/net/bridge").exists():
        raise SystemExit("the br_netfilter kernel module is not loaded (modprobe br_netfilter)")
    saved = STATE / "sysctl.json"
    old = json.loads(saved.read_text()) if saved.exists() else {}
    for key, value in {
        "net/bridge/bridge-nf-call-iptables": "1",
        "net/ipv4/ip_forward": "1",
    }.items():
        p = Path("/proc/sys") / key
        old.setdefault(key, p.read_text().strip())
        p.write_text(value)
    saved.write_text(json.dumps(old))


def start_etcd() -> None:
    start(
        "etcd",
        [
            BIN / "etcd",
            "--name",
            NODE,
            "--data-dir",
            STATE / "etcd",
            "--listen-client-urls",
            ETCD_CLIENT,
            "--advertise-client-urls",
            ETCD_CLIENT,
            "--listen-peer-urls",
            ETCD_PEER,
            "--initial-advertise-peer-urls",
            ETCD_PEER,
            "--initial-cluster",
            f"{NODE}={ETCD_PEER}",
            "--listen-metrics-urls",
            "http://127.0.0.1:23810",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
    )
    wait_for("etcd /health", lambda: http_ok(f"{ETCD_CLIENT}/health"), 60, ["etcd"])


def start_control_plane(d: Path) -> None:
    start(
        "kube-apiserver",
        [
            BIN / "kube-apiserver",
            f"--etcd-servers={ETCD_CLIENT}",
            f"--bind-address={NODE_IP}",
            f"--advertise-address={NODE_IP}",
            "--secure-port=6443",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-node-port-range=30000-32767",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # Reach the kubelet (logs, exec, port-forward) at its address, never through a resolver.
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-admission-plugins=NodeRestriction",
            "--profiling=false",
            "--v=1",
        ],
    )
    wait_for(
        "kube-apiserver /readyz",
        lambda: https_ok(f"{APISERVER}/readyz", "admin"),
        120,
        ["kube-apiserver", "etcd"],
    )
    start(
        "kube-controller-manager",
        [
            BIN / "kube-controller-manager",
            f"--kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={d / 'ca.crt'}",
            f"--cluster-signing-cert-file={d / 'ca.crt'}",
            f"--cluster-signing-key-file={d / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--v=1",
        ],
    )
    start(
        "kube-scheduler",
        [
            BIN / "kube-scheduler",
            f"--kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=1",
        ],
    )


def containerd_socket() -> Path:
    return STATE / "containerd" / "containerd.sock"


def start_containerd() -> None:
    c = STATE / "containerd"
    (STATE / "cni").mkdir(parents=True, exist_ok=True)
    (STATE / "cni" / "10-kvstore.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "kvstore-k8s",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": POD_BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(STATE / "cni-ipam"),
                            "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )
    )
    c.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    (c / "config.toml").write_text(f"""\
version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{containerd_socket()}"
[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"
[debug]
  address = "{c / "debug.sock"}"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE, so runc cannot lower a process's oom_score_adj below
  # containerd's own (the sandbox's -998 fails with "can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  enable_cdi = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{STATE / "cni"}"
""")
    start("containerd", ["containerd", "--config", c / "config.toml"])
    # `ctr version` answers "Server:" once the socket is served (and fails before that).
    wait_for("containerd", lambda: "Server:" in ctr("version", check=False), 60, ["containerd"])


def ctr(*args: str, check: bool = True, timeout: float = 600) -> str:
    return run(
        "ctr", "--address", containerd_socket(), "-n", "k8s.io", *args, check=check, timeout=timeout
    )


def images() -> None:
    """Import the images into containerd's k8s.io namespace (`ctr images import`)."""
    for tar in build_images():
        ctr("images", "import", str(tar))
    log(
        "images in containerd's k8s.io namespace: "
        + ", ".join(
            line.split()[0]
            for line in ctr("images", "ls").splitlines()[1:]
            if not line.startswith("sha256:")
        )
    )


def build_images() -> list[Path]:
    """The kvstore image from the Dockerfile, and the two images no registry serves here, as
    docker-archive tarballs (cached: the kvstore one by a digest of what it is built from)."""
    images_dir = CACHE / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from tests.k8s.podman import Podman  # the image test's containers.conf and stand-in base

    work = CACHE / "podman"
    work.mkdir(exist_ok=True)
    podman = Podman(work)
    key = source_digest()
    tar = images_dir / f"kvstore-{key[:12]}.tar"
    if not tar.exists():
        log(
            "building the kvstore image with podman (the Dockerfile; base: "
            f"{os.environ.get('KVSTORE_TEST_BASE_IMAGE', 'a Debian bookworm stand-in')})"
        )
        base = podman.standin_base()
        built_image = podman.build(base)
        podman("tag", built_image, KVSTORE_IMAGE)
        for old in images_dir.glob("kvstore-*.tar"):
            old.unlink()
        podman("save", "--format", "docker-archive", "-o", str(tar), KVSTORE_IMAGE, timeout=600)

    pause_tar = images_dir / "pause.tar"
    kubectl_tar = images_dir / f"kubectl-{RELEASE}.tar"
    if not pause_tar.exists() or not kubectl_tar.exists():
        log(f"making {PAUSE_IMAGE} and {KUBECTL_IMAGE}")
        root = work / "pause-root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        shutil.copy(BIN / "pause", root / "pause")
        layer = subprocess.run(
            ["tar", "-C", str(root), "-c", "."], capture_output=True, check=True
        ).stdout
        podman("import", "--change", 'ENTRYPOINT ["/pause"]', "-", PAUSE_IMAGE, stdin=layer)
        podman("save", "--format", "docker-archive", "-o", str(pause_tar), PAUSE_IMAGE)
        # The chaos Job's init container runs `cp /bin/kubectl /tools/kubectl`: the
        # Debian stand-in base has cp; kubectl is this release's.
        ctx = work / "kubectl-image"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir()
        shutil.copy(BIN / "kubectl", ctx / "kubectl")
        (ctx / "Containerfile").write_text(
            f"FROM {podman.standin_base()}\nCOPY kubectl /bin/kubectl\nUSER 10001:10001\n"
        )
        podman("build", "--layers=false", "-t", KUBECTL_IMAGE, str(ctx), timeout=600)
        podman(
            "save", "--format", "docker-archive", "-o", str(kubectl_tar), KUBECTL_IMAGE, timeout=600
        )
    return [tar, pause_tar, kubectl_tar]


def source_digest() -> str:
    """What the kvstore image is built from: the Dockerfile, the project and its package."""
    h = hashlib.sha256()
    files = [REPO / "Dockerfile", REPO / "pyproject.toml", REPO / "README.md"]
    files += sorted(
        p for p in (REPO / "kvstore").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def start_node(d: Path) -> None:
    kubelet_dir = STATE / "kubelet"
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    # The pods' resolver when they use the node's (dnsPolicy: Default): the cluster's DNS too.
    (STATE / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
    (STATE / "kubelet.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": NODE_IP,
                "port": 10250,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(d / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "tlsCertFile": str(d / "kubelet.crt"),
                "tlsPrivateKeyFile": str(d / "kubelet.key"),
                "containerRuntimeEndpoint": f"unix://{containerd_socket()}",
                "cgroupDriver": "cgroupfs",
                # This machine's cgroups are a v1 hierarchy, shared with everything else on it: no
                # QoS cgroups or node allocatable enforcement of the kubelet's own.
                "failCgroupV1": False,
                "cgroupsPerQOS": False,
                "enforceNodeAllocatable": [],
                # Without pod cgroups the in-place resize path dereferences a nil pod cgroup
                # config and the kubelet panics (kuberuntime_manager.go doPodResizeAction) once
                # a container restarts; nothing here resizes pods.
                "featureGates": {"InPlacePodVerticalScaling": False},
                "failSwapOn": False,
                "clusterDomain": "cluster.local",
                "clusterDNS": [NODE_IP],
                "resolvConf": str(STATE / "resolv.conf"),
                # Other work shares this disk and memory: evict only when nearly out.
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "serializeImagePulls": False,
                "maxPods": 60,
                "protectKernelDefaults": False,
                "makeIPTablesUtilChains": False,
                "shutdownGracePeriod": "0s",
            },
            indent=2,
        )
    )
    start(
        "kubelet",
        [
            BIN / "kubelet",
            f"--config={STATE / 'kubelet.yaml'}",
            f"--kubeconfig={STATE / 'kubelet-client.kubeconfig'}",
            f"--root-dir={kubelet_dir}",
            f"--hostname-override={NODE}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
    )

    def node_ready() -> bool:
        out = kubectl(
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.strip() == "True"

    wait_for(f"node {NODE} Ready", node_ready, 180, ["kubelet", "containerd"])
    (STATE / "kube-proxy.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(STATE / "proxy.kubeconfig")},
                "mode": "iptables",
                "clusterCIDR": POD_SUBNET,
                "hostnameOverride": NODE,
                "bindAddress": NODE_IP,
                "healthzBindAddress": "127.0.0.1:10256",
                "metricsBindAddress": "127.0.0.1:10249",
                # Leave the machine's conntrack table size alone.
                "conntrack": {"maxPerCore": 0, "min": 0},
                "nodePortAddresses": [f"{NODE_CIDR}"],
            },
            indent=2,
        )
    )
    start("kube-proxy", [BIN / "kube-proxy", f"--config={STATE / 'kube-proxy.yaml'}", "--v=1"])


def start_addons() -> None:
    (STATE / "Corefile").write_text(f"""\
.:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {STATE / "admin.kubeconfig"} kvstore
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
""")
    start("coredns", [BIN / "coredns", "-conf", STATE / "Corefile"])
    start(
        "kv-provisioner",
        [
            BIN / "kv-provisioner",
            f"--kubeconfig={STATE / 'admin.kubeconfig'}",
            f"--root={STATE / 'volumes'}",
            f"--node={NODE}",
        ],
    )
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "standard",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kvstore.invalid/hostpath",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
            }
        ),
    )
    wait_for("CoreDNS ready", lambda: http_ok("http://127.0.0.1:18181/ready"), 60, ["coredns"])
    wait_for(
        "kubernetes.default.svc.cluster.local in CoreDNS",
        lambda: dns_a("kubernetes.default.svc.cluster.local") == KUBERNETES_SVC_IP,
        60,
        ["coredns"],
    )
    # The default ServiceAccount (the token controller) before anything is applied.
    wait_for(
        "ServiceAccount default/default",
        lambda: kubectl("get", "sa", "default", check=False) != "",
        60,
        ["kube-controller-manager"],
    )


def dns_a(name: str) -> str:
    """One A query to the cluster's DNS on the node address (no resolver library needed)."""
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(q, (NODE_IP, 53))
        reply = s.recv(512)
    if reply[3] & 0x0F or reply[6:8] == b"\x00\x00":
        return ""
    return ".".join(str(b) for b in reply[-4:])


def up() -> None:
    started = time.monotonic()
    preflight()
    if running("kube-apiserver"):
        log(f"already up: export KUBECONFIG={KUBECONFIG}")
        return
    STATE.mkdir(parents=True, exist_ok=True)
    network()
    d = pki()
    start_etcd()
    start_control_plane(d)
    start_containerd()
    images()
    start_node(d)
    start_addons()
    log(f"cluster Ready in {time.monotonic() - started:.0f}s")
    print(kubectl("get", "nodes", "-o", "wide"), end="")
    print(f"\nexport KUBECONFIG={KUBECONFIG}")


# --- down --------------------------------------------------------------------------------


def down() -> None:
    if not STATE.exists():
        log("nothing to tear down")
        return
    # No controller re-creates what the kubelet is about to stop.
    stop("kube-controller-manager")
    stop("kube-scheduler")
    if running("kubelet") and running("kube-apiserver"):
        # The kubelet stops every pod properly: containers, then the sandbox and its network.
        kubectl(
            "delete",
            "pods",
            "--all-namespaces",
            "--all",
            "--grace-period=0",
            "--force",
            "--wait=false",
            check=False,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and running("containerd") and sandboxes():
            time.sleep(0.5)
    for name in ("kube-proxy", "kubelet", "coredns", "kv-provisioner"):
        stop(name)
    if (BIN / "kube-proxy").exists():
        run(BIN / "kube-proxy", "--cleanup", check=False)
    # The kubelet's own chain, which kube-proxy's clean-up leaves.
    for iptables in ("iptables", "ip6tables"):
        for chain in ("INPUT", "OUTPUT"):
            run(iptables, "-D", chain, "-j", "KUBE-FIREWALL", check=False)
        run(iptables, "-F", "KUBE-FIREWALL", check=False)
        run(iptables, "-X", "KUBE-FIREWALL", check=False)
    if running("containerd"):
        for task in sandboxes():
            ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for netns in leftover_netns():
            run("ip", "netns", "delete", netns, check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ctr("tasks", "ls", "-q", check=False).strip():
            for task in ctr("tasks", "ls", "-q", check=False).split():
                ctr("tasks", "delete", "--force", task, check=False)
            time.sleep(0.5)
    stop("containerd")
    stop("kube-apiserver")
    stop("etcd")
    # What the kubelet and containerd mounted under the state directory, deepest first.
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(STATE) + "/")), key=len, reverse=True):
        run("umount", "-l", m, check=False)
    for bridge in (POD_BRIDGE, NODE_BRIDGE):
        run("ip", "link", "delete", bridge, check=False)
    # The two settings `up` changed, back as they were.
    saved = STATE / "sysctl.json"
    for key, value in (json.loads(saved.read_text()) if saved.exists() else {}).items():
        Path("/proc/sys", key).write_text(value)
    last = CACHE / "last-logs"
    shutil.rmtree(last, ignore_errors=True)
    if (STATE / "logs").exists():
        shutil.copytree(STATE / "logs", last)
    shutil.rmtree(STATE, ignore_errors=True)
    log(f"down; the logs of the last run are in {last}")


def sandboxes() -> list[str]:
    return ctr("tasks", "ls", "-q", check=False).split()


def leftover_netns() -> list[str]:
    """The network namespaces containerd made for this cluster's pods (its sandboxes' specs)."""
    found = []
    for cid in ctr("containers", "ls", "-q", check=False).split():
        try:
            info = json.loads(ctr("containers", "info", cid, check=False) or "{}")
        except json.JSONDecodeError:
            continue
        for ns in info.get("Spec", {}).get("linux", {}).get("namespaces", []):
            path = ns.get("path", "")
            if ns.get("type") == "network" and path.startswith("/var/run/netns/cni-"):
                found.append(Path(path).name)
    return sorted(set(found))


def status() -> None:
    for name in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
        "kube-proxy",
        "coredns",
        "kv-provisioner",
    ):
        pid = running(name)
        print(f"{name:24} {f'running (pid {pid})' if pid else 'stopped'}")
    print(f"built: {built()} ({BIN})")
    print(f"export KUBECONFIG={KUBECONFIG}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "images", "up", "down", "status", "built"])
    parser.add_argument("--force", action="store_true", help="build: rebuild every component")
    args = parser.parse_args()
    if args.command == "build":
        build(args.force)
    elif args.command == "images":
        for tar in build_images():
            print(tar)
    elif args.command == "up":
        build()
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        status()
    elif args.command == "built":
        sys.exit(0 if built() else 1)


if __name__ == "__main__":
    main()
