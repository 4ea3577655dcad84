"""A small reader of the Dockerfile: its stages and their instructions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name or self.base} has no {instruction}"
        return found[-1]

    def exec_form(self, instruction: str) -> list[str]:
        value: list[str] = json.loads(self.last(instruction))
        return value


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            ins, _, args = line.strip().partition(" ")
            found.append((ins.upper(), " ".join(args.split())))
    return found


def read(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults, and the stages in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins, rest in instructions(path.read_text()):
        if ins == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((ins, rest))
        elif ins == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args, stages


def env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in stage.all("ENV"):
        values.update(dict(pair.split("=", 1) for pair in line.split()))
    return values
