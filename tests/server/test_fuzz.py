"""Property-based fuzzing of the whole HTTP API from its OpenAPI document (schemathesis), against
a real manager and a real follower: requests that fit the document and requests that do not.

Whatever is sent: no 5xx but the documented 503 / 504 / 507, the JSON error shape on every
4xx and 5xx, and both processes alive and serving at the end.

Bounded for the normal suite (a few examples per operation and mode, a fixed seed). A longer
run, as in the README's Development section:

    KV_FUZZ_EXAMPLES=300 KV_FUZZ_SEED=7 .venv/bin/python -m pytest -q -s tests/server/test_fuzz.py
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response

from kvstore.server import openapi
from tests.harness import Cluster

pytestmark = [
    pytest.mark.e2e,
    # schemathesis draws from `random` inside its strategies (Hypothesis seeds it per example).
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
    ),
]
EXAMPLES = int(os.environ.get("KV_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("KV_FUZZ_SEED", "20261201"))
# Streams that never end by themselves; HEAD and the e2e tests cover them.
ENDLESS = {"watch", "replicationStream"}
DOCUMENTED_5XX = {503, 504, 507}
# The waits (`?timeout=`, up to an hour) are fixed short: a fuzz run is bounded in time.
SHORT_WAIT = "0.1"


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """An acks body as generated: a string as its bytes, anything else as its text."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else str(value).encode()


def fuzz_document() -> dict[str, Any]:
    return copy.deepcopy(openapi.document())


@dataclass
class Figures:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def check(self, case: Case[Any], response: Response, where: str) -> None:
        self.sent += 1
        self.statuses[response.status_code] += 1
        status = response.status_code
        problem = None
        if status >= 500 and status not in DOCUMENTED_5XX:
            problem = f"undocumented {status}"
        elif status >= 400 and not _is_error_shape(response):
            problem = f"{status} without the JSON error shape"
        if problem and len(self.problems) < 20:
            body = response.content[:300]
            self.problems.append(f"{where}: {problem}: {case.as_curl_command()} -> {body!r}")


def _is_error_shape(response: Response) -> bool:
    types = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [])
    if not types or not types[0].startswith("application/json"):
        return False
    try:
        err = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(err.get("code"), str) and isinstance(err.get("message"), str)


def fuzz(bases: dict[str, str], figures: Figures) -> None:
    """Every operation, in both modes, against each pod: `EXAMPLES` cases each."""
    schema = schemathesis.openapi.from_dict(fuzz_document())
    session = requests.Session()
    try:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result.err()
            operation = result.ok()
            if operation.definition.raw.get("operationId") in ENDLESS:
                continue
            names = {p.name for p in operation.query}
            fixed = {"timeout": SHORT_WAIT} if "timeout" in names else None
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for where, base in bases.items():
                    _fuzz_one(operation, mode, fixed, where, base, session, figures)
    finally:
        session.close()


def _fuzz_one(
    operation: Any,
    mode: GenerationMode,
    fixed: dict[str, str] | None,
    where: str,
    base: str,
    session: requests.Session,
    figures: Figures,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, query=fixed)

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(strategy)
    def run(case: Case[Any]) -> None:
        response = case.call(base_url=base, session=session, timeout=15, allow_redirects=False)
        figures.check(case, response, f"{where} {mode.value} {operation.label}")

    # Unsatisfiable: nothing invalid to make of an operation without inputs (e.g. GET /livez).
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()


async def test_fuzz_the_api_from_its_document(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        bases = {"kv-0": cluster.url(0), "kv-1": cluster.url(1)}
        figures = Figures()
        started = time.monotonic()
        await asyncio.to_thread(fuzz, bases, figures)
        seconds = time.monotonic() - started
        print(
            f"\nfuzz: {figures.sent} requests in {seconds:.1f}s "
            f"({EXAMPLES} examples per operation, mode and pod; seed {SEED}); "
            f"statuses {dict(sorted(figures.statuses.items()))}"
        )
        assert not figures.problems, "\n".join(figures.problems)
        assert figures.sent > 100
        for ordinal in (0, 1):
            assert cluster.running(ordinal), cluster.logs()
            assert await cluster.is_ready(ordinal), cluster.logs()
            assert "Traceback" not in cluster.log(ordinal), cluster.log(ordinal)[-4000:]
