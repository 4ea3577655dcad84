"""The local StatefulSet's spec beyond its replica count: its policies, its pod template and the
template's revisions, as the StatefulSet controller keeps them.

- `Policies`: `podManagementPolicy` (OrderedReady or Parallel), the volume retention policy
  (`whenScaled`, `whenDeleted`: Retain or Delete) and `updateStrategy` (RollingUpdate or OnDelete).
- `Template`: what every pod is started with: its environment (the `KV_*` settings) and
  annotations (`kvstore local rollout --restart` sets `restartedAt`, as `kubectl rollout restart`
  does). Its revision is a hash of its content, `kv-<10 hex digits>`, like the label
  `controller-revision-hash`: the same template always has the same revision.
- `Revisions`: every template seen (the ControllerRevisions), the current revision (what the set
  ran before the last template change) and the update revision (the newest), and the partition.
  A pod created while a RollingUpdate is partitioned gets the current revision below the
  partition and the update revision at or above it; with OnDelete, always the update revision.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvstore.config import BY_ENV
from kvstore.local.state import SET_NAME

ORDERED_READY, PARALLEL = "OrderedReady", "Parallel"
RETAIN, DELETE = "Retain", "Delete"
ROLLING_UPDATE, ON_DELETE = "RollingUpdate", "OnDelete"
POD_MANAGEMENT_POLICIES = (ORDERED_READY, PARALLEL)
RETENTION_POLICIES = (RETAIN, DELETE)
UPDATE_STRATEGIES = (ROLLING_UPDATE, ON_DELETE)


class SpecError(ValueError):
    """A policy, partition or template change that cannot be applied; the message says why."""


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{what} {value!r}: expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Policies:
    pod_management_policy: str = ORDERED_READY
    when_scaled: str = RETAIN
    when_deleted: str = RETAIN
    update_strategy: str = ROLLING_UPDATE

    def __post_init__(self) -> None:
        _one_of("pod management policy", self.pod_management_policy, POD_MANAGEMENT_POLICIES)
        _one_of("whenScaled", self.when_scaled, RETENTION_POLICIES)
        _one_of("whenDeleted", self.when_deleted, RETENTION_POLICIES)
        _one_of("update strategy", self.update_strategy, UPDATE_STRATEGIES)

    @property
    def ordered(self) -> bool:
        return self.pod_management_policy == ORDERED_READY

    @property
    def rolling(self) -> bool:
        return self.update_strategy == ROLLING_UPDATE

    def describe(self) -> dict[str, str]:
        return {
            "pod_management_policy": self.pod_management_policy,
            "when_scaled": self.when_scaled,
            "when_deleted": self.when_deleted,
            "update_strategy": self.update_strategy,
        }


@dataclass(frozen=True)
class Template:
    """The pod template: environment and annotations. Compare templates by `revision`."""

    env: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        content = {"env": dict(self.env), "annotations": dict(self.annotations)}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return f"{SET_NAME}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    def changed(
        self, set_env: Mapping[str, str], unset: Iterable[str] = (), restart: bool = False
    ) -> Template:
        """A copy with `set_env` set, `unset` removed, and a new `restartedAt` if `restart`."""
        gone = set(unset)
        env = {k: v for k, v in self.env.items() if k not in gone}
        env.update(set_env)
        annotations = dict(self.annotations)
        if restart:
            annotations["restartedAt"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return Template(env, annotations)

    def describe(self) -> dict[str, Any]:
        """The template as JSON, with secret settings (KV_AUTH_TOKEN, ...) masked."""
        masked = {
            k: "***" if (k in BY_ENV and BY_ENV[k].secret and v) else v
            for k, v in sorted(self.env.items())
        }
        return {"env": masked, "annotations": dict(self.annotations)}


class Revisions:
    """The set's templates by revision, its current and update revisions, and its partition."""

    def __init__(self, template: Template, partition: int = 0) -> None:
        if partition < 0:
            raise SpecError("partition must be 0 or more")
        self.templates: dict[str, Template] = {template.revision: template}
        self.current = self.update = template.revision
        self.partition = partition

    @property
    def template(self) -> Template:
        """The newest template (the update revision's)."""
        return self.templates[self.update]

    def apply(self, template: Template) -> bool:
        """Make `template` the update revision; False if it already is."""
        revision = template.revision
        if revision == self.update:
            return False
        self.templates.setdefault(revision, template)
        self.update = revision
        return True

    def revision_for(self, ordinal: int, policies: Policies) -> str:
        """The revision a pod created now gets."""
        if policies.rolling and ordinal < self.partition:
            return self.current
        return self.update

    def next_to_roll(self, revisions: Mapping[int, str | None], replicas: int) -> int | None:
        """The highest ordinal at or above the partition not yet at the update revision."""
        stale = [
            o
            for o in range(self.partition, replicas)
            if revisions.get(o) not in (None, self.update)
        ]
        return max(stale) if stale else None

    def settle(self, revisions: Mapping[int, str | None], replicas: int) -> bool:
        """Once every pod runs the update revision it becomes the current one; True then."""
        if self.current == self.update:
            return False
        if any(revisions.get(o) != self.update for o in range(replicas)):
            return False
        self.current = self.update
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "current_revision": self.current,
            "update_revision": self.update,
            "partition": self.partition,
            "template": self.template.describe(),
        }
