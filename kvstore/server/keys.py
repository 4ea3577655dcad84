"""Every `web.AppKey` of the application, in one module that imports no handler: any handler
module may import it without an import cycle."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from kvstore.cluster.follower import Follower
from kvstore.cluster.node import Node
from kvstore.config import Settings
from kvstore.server.metrics import Metrics
from kvstore.store.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SESSION = web.AppKey("session", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", Metrics)
NODE = web.AppKey("node", Node)
FOLLOWER = web.AppKey("follower", Follower)  # on a follower only
# The long responses (replication streams, acks, watches): ended first at shutdown.
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
