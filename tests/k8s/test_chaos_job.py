"""The chaos Job: allowed to delete the set's pods, and has kubectl at hand."""

from __future__ import annotations

import importlib.util
import re

import pytest

from kvstore.cli import main as cli

from .objects import Obj, containers, env_values, one, pod_spec


def test_job_runs_kvstore_chaos_against_kubectl(rendered: dict[str, list[Obj]]) -> None:
    job = one(rendered["chaos"], "Job", "kv-chaos")
    assert job["spec"]["backoffLimit"] == 0, "one run, one verdict"
    assert pod_spec(job)["restartPolicy"] == "Never"
    init, chaos = containers(job)
    assert chaos["args"][0] == "chaos" and "--target=kubectl" in chaos["args"]
    env = env_values(chaos)
    for ref in re.findall(r"\$\((\w+)\)", " ".join(chaos["args"])):
        assert ref in env, f"$({ref}) is not defined in the container's env"
    # The init container copies kubectl into the directory that comes first on PATH.
    target = init["command"][-1].rsplit("/", 1)[0]
    mounts = {m["name"]: m["mountPath"] for m in chaos["volumeMounts"]}
    [tools] = [m["name"] for m in init["volumeMounts"] if m["mountPath"] == target]
    assert env["PATH"].split(":")[0] == mounts[tools]


def test_job_may_delete_pods_and_nothing_more(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["chaos"]
    account = pod_spec(one(objs, "Job", "kv-chaos"))["serviceAccountName"]
    one(objs, "ServiceAccount", account)
    binding = one(objs, "RoleBinding", "kv-chaos")
    assert {"kind": "ServiceAccount", "name": account} in binding["subjects"]
    role = one(objs, "Role", binding["roleRef"]["name"])
    verbs = {
        (res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]
    }
    assert {("pods", "get"), ("pods", "list"), ("pods", "delete")} <= verbs
    assert {verb for res, verb in verbs if res != "pods"} <= {"get", "list", "watch"}


def test_job_arguments_parse_and_find_the_set(rendered: dict[str, list[Obj]]) -> None:
    if importlib.util.find_spec("kvstore.local.chaos") is None:
        pytest.skip("kvstore.local.chaos does not exist yet")
    objs = rendered["kind+auth"]
    chaos = containers(one(objs, "Job", "kv-chaos"))[-1]
    env = env_values(chaos)
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in chaos["args"]]
    parsed = cli.build_parser().parse_args(args)
    assert (parsed.command, parsed.target, parsed.namespace) == ("chaos", "kubectl", "default")
    sts = one(objs, "StatefulSet", parsed.statefulset)
    selector = dict(pair.split("=", 1) for pair in parsed.selector.split(","))
    assert selector == sts["spec"]["selector"]["matchLabels"]
    ports = [p["containerPort"] for c in containers(sts) for p in c["ports"]]
    assert parsed.port in ports
