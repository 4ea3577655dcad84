"""What the bench prints: the report of one `kvstore bench` scenario (`Report`), and the suite's
figures (`Results`): one table of them (kvstore, etcd and their ratio), and the targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kvstore.bench.stats import Latency
from kvstore.cli.tables import format_pairs

HIGHER, LOWER = "higher", "lower"


# --- one scenario ------------------------------------------------------------------------------
@dataclass
class Report:
    scenario: str
    target: str  # what was measured: URL and pod
    load_generator: str
    seconds: float
    ok: int
    failed: int
    per_second: float
    latency: Latency
    latency_label: str  # what `latency` measures
    extra: dict[str, Any] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        pairs = [
            ("target", self.target),
            ("load generator", self.load_generator),
            ("requests", f"{self.ok} ok, {self.failed} failed, in {self.seconds:.2f} s"),
            ("throughput", f"{self.per_second:.0f} /s"),
            (f"{self.latency_label} (ms)", self.latency.text()),
            *((k.replace("_", " "), str(v)) for k, v in self.extra.items()),
            *(("error", e) for e in self.error_samples),
        ]
        return f"kvstore bench {self.scenario}\n" + _indent(format_pairs(pairs))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# --- the suite ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One measured number of one system."""

    scenario: str  # e.g. "put_1n_c64"
    title: str  # what was measured, for people
    metric: str  # e.g. "req/s", "p99 ms"
    value: float | None
    better: str  # HIGHER or LOWER
    generator: str  # the load generator used


@dataclass(frozen=True)
class Target:
    """A goal: kvstore's figure against etcd's (`ratio`) or against a fixed `limit`."""

    label: str
    scenario: str
    metric: str
    ratio: float | None = None  # kvstore / etcd must be >= (HIGHER) or <= (LOWER) this
    limit: float | None = None  # kvstore's figure must be >= (HIGHER) or <= (LOWER) this


TARGETS = (
    Target("durable PUT/s, 1 node, 64 conns >= 1.5x etcd", "put_1n_c64", "req/s", ratio=1.5),
    Target("PUT p99, 1 node, 64 conns <= etcd's", "put_1n_c64", "p99 ms", ratio=1.0),
    Target("durable PUT/s, 3 nodes, 64 conns >= 1.5x etcd", "put_3n_c64", "req/s", ratio=1.5),
    Target("PUT p99, 3 nodes, 64 conns <= etcd's", "put_3n_c64", "p99 ms", ratio=1.0),
    Target("GET/s on a follower >= 2x etcd serializable", "get_follower", "req/s", ratio=2.0),
    Target("replication lag p99 <= etcd's", "lag", "p99 ms", ratio=1.0),
    Target("replication lag p50 <= 2 ms", "lag", "p50 ms", limit=2.0),
    Target("catch-up of the missed writes <= 2 s", "catchup", "s", limit=2.0),
    Target("snapshot install <= 15 s", "snapshot", "s", limit=15.0),
    Target("peak RSS per pod <= 100 MiB", "rss", "MiB (max pod)", limit=100.0),
)


@dataclass
class Results:
    """Every figure of every system, in the order measured, and what the run was."""

    setup: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, list[Figure]] = field(default_factory=dict)  # system -> figures
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # system -> scenario -> ..

    def add(self, system: str, figure: Figure) -> None:
        self.figures.setdefault(system, []).append(figure)

    def detail(self, system: str, scenario: str, info: dict[str, Any]) -> None:
        self.details.setdefault(system, {})[scenario] = info

    def value(self, system: str, scenario: str, metric: str) -> float | None:
        for f in self.figures.get(system, []):
            if (f.scenario, f.metric) == (scenario, metric):
                return f.value
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per (scenario, metric), kvstore's order first."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for system, figures in self.figures.items():
            for f in figures:
                row = rows.setdefault(
                    (f.scenario, f.metric),
                    {
                        "scenario": f.scenario,
                        "title": f.title,
                        "metric": f.metric,
                        "better": f.better,
                        "values": {},
                        "generators": {},
                    },
                )
                row["values"][system] = f.value
                row["generators"][system] = f.generator
        for row in rows.values():
            row["ratio"] = ratio(row["values"].get("kvstore"), row["values"].get("etcd"))
        return list(rows.values())

    def targets(self) -> list[dict[str, Any]]:
        """The targets kvstore has a figure for (and etcd too, for a ratio)."""
        return [verdict(t, self) for t in TARGETS if self._measured(t)]

    def _measured(self, t: Target) -> bool:
        systems = ("kvstore",) if t.limit is not None else ("kvstore", "etcd")
        return all(self.value(s, t.scenario, t.metric) is not None for s in systems)

    def to_json(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "rows": self.rows(),
            "targets": self.targets(),
            "figures": {s: [asdict(f) for f in fs] for s, fs in self.figures.items()},
            "details": self.details,
        }


def ratio(kv: float | None, etcd: float | None) -> float | None:
    if kv is None or etcd is None or etcd == 0 or math.isnan(kv) or math.isnan(etcd):
        return None
    return kv / etcd


def _better(direction: str, value: float, bound: float) -> bool:
    return value >= bound if direction == HIGHER else value <= bound


def verdict(target: Target, results: Results) -> dict[str, Any]:
    kv = results.value("kvstore", target.scenario, target.metric)
    direction = next(
        f.better
        for f in results.figures["kvstore"]
        if (f.scenario, f.metric) == (target.scenario, target.metric)
    )
    out: dict[str, Any] = {"target": target.label, "kvstore": kv}
    if target.limit is not None:
        assert kv is not None
        out |= {"against": target.limit, "met": _better(direction, kv, target.limit)}
        return out
    assert target.ratio is not None
    r = ratio(kv, results.value("etcd", target.scenario, target.metric))
    out |= {"ratio": r, "against": target.ratio}
    out["met"] = None if r is None else _better(direction, r, target.ratio)
    return out


# --- text ----------------------------------------------------------------------------------------
def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    return "\n".join([line(header), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])


def figures_table(results: Results) -> str:
    systems = list(results.figures)
    header = ["scenario", "metric", *systems]
    if "etcd" in systems and "kvstore" in systems:
        header.append("kvstore/etcd")
    header += ["better", "load"]
    rows = []
    last = None
    for row in results.rows():
        title = row["title"] if row["scenario"] != last else ""
        last = row["scenario"]
        cells = [title, row["metric"], *(number(row["values"].get(s)) for s in systems)]
        if "kvstore/etcd" in header:
            cells.append("-" if row["ratio"] is None else f"{row['ratio']:.2f}x")
        gens = sorted(set(row["generators"].values()))
        cells += [row["better"], "; ".join(gens) if title else ""]
        rows.append(cells)
    right = set(range(2, 2 + len(systems) + ("kvstore/etcd" in header)))
    return markdown_table(header, rows, right)


def targets_table(results: Results) -> str:
    rows = []
    for t in results.targets():
        if "ratio" in t:
            measured = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        else:
            measured = number(t["kvstore"])
        met = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        rows.append([t["target"], measured, met])
    return markdown_table(["target", "measured", "verdict"], rows, {1})


def render(results: Results) -> str:
    setup = results.setup
    lines = [f"kvstore bench --suite: {setup.get('summary', '')}".rstrip(), ""]
    lines.append(figures_table(results))
    if results.targets():
        lines += ["", targets_table(results)]
    notes = setup.get("notes", [])
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines)
