"""The repository stands on its own: every relative link in its Markdown resolves to a file of
the repository (and an anchor to a heading of that file), no link leaves it except for a few
well-known sites, and neither the docs nor the code users see name documents that are not in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "k8s").rglob("*.md"),
        *(ROOT / "benchmarks").glob("*.md"),
    ]
)
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
WELL_KNOWN = {
    "kind.sigs.k8s.io",
    "kubernetes.io",
    "prometheus.io",
    "semver.org",
    "www.apache.org",
}


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())  # code blocks hold commands, not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return INLINE.findall(text) + REFERENCE.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "CHANGELOG.md", "docs/API.md", "docs/cli.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # a scheme: it leaves the repository
            host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", target)
            if not target.startswith("https://") or host not in WELL_KNOWN:
                broken.append(f"{target}: leaves the repository")
            continue
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert broken == [], f"{doc.relative_to(ROOT)}: {broken}"


def test_slugs_are_githubs() -> None:
    assert slug("What you can rely on") == "what-you-can-rely-on"
    assert slug("`kvstore local` and chaos") == "kvstore-local-and-chaos"
    assert slug("Failures and what clients see") == "failures-and-what-clients-see"


def test_nothing_users_read_names_an_outside_document() -> None:
    """No `../shared`, no internal contract named, in the docs or the package."""
    files = subprocess.run(
        ["git", "ls-files", "README.md", "CHANGELOG.md", "docs", "kvstore", "k8s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".png", ".svg", ".ico") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\.\./shared|\bSPEC\b|SPEC\.md", line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
