"""The control channel of a local cluster: a small HTTP server on 127.0.0.1 inside the
supervisor, its address and a random token in `<dir>/cluster.json` (readable only by its owner).

    GET  /v1/cluster              the supervisor's view: replicas, every pod's phase and address
    GET  /v1/events               every pod event since the supervisor started
    POST /v1/pods/{name}/delete   {"force": bool, "wipe": bool}; answers once the process is
                                  gone (with "wipe", its data directory too)
    POST /v1/pods/{name}/pause    {"seconds": S}: SIGSTOP now, SIGCONT after S seconds
    POST /v1/scale                {"replicas": N}
    POST /v1/rollout              {"set": {NAME: VALUE}, "unset": [NAME], "partition": P,
                                  "restart": bool}: a new template revision and/or partition
    POST /v1/down                 stop every pod in reverse order, then the supervisor
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from kvstore.local.state import read_cluster_file
from kvstore.local.supervisor import PodError, Supervisor

TOKEN_HEADER = "X-KV-Local-Token"
SUPERVISOR = web.AppKey("supervisor", Supervisor)


class NoCluster(Exception):
    """No local cluster runs in the directory (or its supervisor does not answer)."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": "local", "message": message}}, status=status)


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    expected = request.app[SUPERVISOR].token
    if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), expected or ""):
        return _error(401, "missing or wrong control token (see cluster.json)")
    response: web.StreamResponse = await handler(request)
    return response


async def _cluster(request: web.Request) -> web.Response:
    return web.json_response(request.app[SUPERVISOR].describe())


async def _events(request: web.Request) -> web.Response:
    return web.json_response(request.app[SUPERVISOR].events.events)


async def _delete(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    force, wipe = bool(body.get("force", False)), bool(body.get("wipe", False))
    name = request.match_info["name"]
    try:
        code = await request.app[SUPERVISOR].delete_pod(name, force, wipe)
    except PodError as exc:
        return _error(409, str(exc))
    return web.json_response({"pod": name, "force": force, "wipe": wipe, "exit_code": code})


async def _pause(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    name = request.match_info["name"]
    try:
        seconds = float(body.get("seconds", 5.0))
    except (TypeError, ValueError):
        return _error(400, '"seconds" must be a number')
    if not 0 < seconds <= 600:
        return _error(400, '"seconds" must be above 0 and at most 600')
    try:
        request.app[SUPERVISOR].pause_pod(name, seconds)
    except PodError as exc:
        return _error(409, str(exc))
    return web.json_response({"pod": name, "seconds": seconds})


async def _scale(request: web.Request) -> web.Response:
    body = await request.json()
    replicas = body.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        return _error(400, "replicas must be a whole number, 0 or more")
    request.app[SUPERVISOR].scale(replicas)
    return web.json_response({"replicas": replicas})


def _rollout_args(body: Any) -> tuple[dict[str, str], list[str], int | None, bool]:
    """The fields of a rollout request, checked; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    set_env, unset = body.get("set") or {}, body.get("unset") or []
    partition, restart = body.get("partition"), body.get("restart", False)
    if not isinstance(set_env, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in set_env.items()
    ):
        raise ValueError('"set" must map names to string values')
    if not isinstance(unset, list) or not all(isinstance(n, str) and n for n in unset):
        raise ValueError('"unset" must be a list of names')
    if partition is not None and (not isinstance(partition, int) or partition < 0):
        raise ValueError('"partition" must be a whole number, 0 or more')
    if not isinstance(restart, bool):
        raise ValueError('"restart" must be true or false')
    return set_env, unset, partition, restart


async def _rollout(request: web.Request) -> web.Response:
    try:
        set_env, unset, partition, restart = _rollout_args(await request.json())
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        doc = request.app[SUPERVISOR].rollout(set_env, unset, partition, restart)
    except PodError as exc:
        return _error(400, str(exc))
    return web.json_response(doc)


async def _down(request: web.Request) -> web.Response:
    request.app[SUPERVISOR].request_down()
    return web.json_response({"down": True}, status=202)


async def serve_control(supervisor: Supervisor) -> web.AppRunner:
    """Start the control server for `supervisor`; sets its `control_url` and `token`."""
    app = web.Application(middlewares=[_auth])
    app[SUPERVISOR] = supervisor
    app.router.add_get("/v1/cluster", _cluster)
    app.router.add_get("/v1/events", _events)
    app.router.add_post("/v1/pods/{name}/delete", _delete)
    app.router.add_post("/v1/pods/{name}/pause", _pause)
    app.router.add_post("/v1/scale", _scale)
    app.router.add_post("/v1/rollout", _rollout)
    app.router.add_post("/v1/down", _down)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    host, port = runner.addresses[0][:2]
    supervisor.token = secrets.token_hex(16)
    supervisor.control_url = f"http://{host}:{port}"
    return runner


class ControlClient:
    """Talks to the supervisor of the local cluster in `root`: `async with ControlClient(root)`."""

    def __init__(self, root: Path, timeout: float = 60.0) -> None:
        info = read_cluster_file(root)
        if not info or not info.get("control"):
            raise NoCluster(f"no local cluster is running in {root} (start one: kvstore local up)")
        self.root = root
        self.base = str(info["control"])
        headers = {TOKEN_HEADER: str(info.get("token") or "")}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._session.request(method, self.base + path, json=body) as response:
                data = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise NoCluster(f"the supervisor of {self.root} does not answer: {exc}") from exc
        if response.status >= 400:
            raise PodError(data.get("error", {}).get("message", f"HTTP {response.status}"))
        return data

    async def cluster(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/v1/cluster")
        return data

    async def events(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self._call("GET", "/v1/events")
        return data

    async def delete_pod(
        self, name: str, force: bool = False, wipe: bool = False
    ) -> dict[str, Any]:
        body = {"force": force, "wipe": wipe}
        data: dict[str, Any] = await self._call("POST", f"/v1/pods/{name}/delete", body)
        return data

    async def pause_pod(self, name: str, seconds: float) -> dict[str, Any]:
        body = {"seconds": seconds}
        data: dict[str, Any] = await self._call("POST", f"/v1/pods/{name}/pause", body)
        return data

    async def scale(self, replicas: int) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("POST", "/v1/scale", {"replicas": replicas})
        return data

    async def rollout(
        self,
        set_env: dict[str, str] | None = None,
        unset: list[str] | None = None,
        partition: int | None = None,
        restart: bool = False,
    ) -> dict[str, Any]:
        body = {"set": set_env or {}, "unset": unset or [], "restart": restart}
        if partition is not None:
            body["partition"] = partition
        data: dict[str, Any] = await self._call("POST", "/v1/rollout", body)
        return data

    async def down(self) -> None:
        await self._call("POST", "/v1/down")
