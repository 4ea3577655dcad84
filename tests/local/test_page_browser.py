"""The page in a real browser: headless Chromium from apt (`chromium`), driven by Playwright for
Python through its `executable_path` (Playwright downloads no browser here), against a 3-pod
`kvstore local` cluster.

Skipped only when Chromium is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import LocalCluster, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Playwright adds --headless itself (headless=True) and takes the fresh profile directory as
# its user data dir; these are the rest of what Chromium needs on these machines.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "set")
    local.cwd.mkdir()
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture
def page(tmp_path: Path, cluster: LocalCluster) -> Iterator[Page]:
    """A fresh Chromium profile and one tab; on failure, a screenshot next to the pods' logs."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            tab = context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            yield tab
            assert not errors, f"the page threw: {errors}"
        finally:
            context.close()


def row(page: Page, pod: str) -> Any:
    return page.locator(f'#pods tbody tr[data-pod="{pod}"]')


def key_row(page: Page, pod: str) -> Any:
    return page.locator(f'#key-pods tbody tr[data-pod="{pod}"]')


def key_on_every_pod(page: Page, version: str) -> None:
    """The key view lists the three pods, each holding `version`, none behind; the followers
    with their lag, every pod with its applied seq."""
    expect(page.locator("#key-view")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#key-pods tbody tr")).to_have_count(3, timeout=WAIT_MS)
    for name in ("kv-0", "kv-1", "kv-2"):
        found = key_row(page, name)
        expect(found).to_have_attribute("data-version", version, timeout=WAIT_MS)
        expect(found).to_have_attribute("data-behind", "false", timeout=WAIT_MS)
        expect(found).to_have_attribute("data-seq", re.compile(r"^\d+$"))
    for name in ("kv-1", "kv-2"):
        expect(key_row(page, name)).to_have_attribute("data-lag", re.compile(r"^\d"))


def check(page: Page, cluster: LocalCluster, tmp_path: Path, what: str, step: Any) -> None:
    """Run an `expect(...)` step; on failure say what, keep a screenshot, dump the pods' logs."""
    try:
        step()
    except (AssertionError, PlaywrightTimeoutError) as exc:
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot))
        raise AssertionError(
            f"the page did not show {what} ({exc})\nscreenshot: {shot}\n"
            f"pods:\n{page.locator('#pods').inner_text()}\n"
            f"events:\n{page.locator('#events').inner_text()}\n{cluster.logs()}"
        ) from exc


# Back: the pod's row is ready again, on another address, and the events say it was away:
# either the page saw the gap (gone or unreachable, then back), or the pod was replaced between
# two of the page's looks, which it reports as one "restart" event.
BACK_AFTER_A_GAP = """([pod, old]) => {
  const row = document.querySelector(`#pods tbody tr[data-pod="${pod}"]`);
  const kinds = [...document.querySelectorAll(`#events li[data-pod="${pod}"]`)]
    .map((item) => item.dataset.kind)
    .reverse();
  const down = kinds.indexOf("down");
  const gap = down >= 0 && kinds.slice(down).includes("up");
  return row !== null && row.dataset.state === "ready" && row.dataset.address !== old &&
    (gap || kinds.includes("restart"));
}"""


def test_the_page_follows_the_set(page: Page, cluster: LocalCluster, tmp_path: Path) -> None:
    pods = {p["name"]: p for p in cluster.status()["pods"]}
    page.goto(pods["kv-2"]["url"] + "/")  # the page as a follower serves it

    # Three pods, kv-0 the manager.
    def three_ready_pods() -> None:
        expect(page.locator("#pods tbody tr")).to_have_count(3, timeout=WAIT_MS)
        for name in ("kv-0", "kv-1", "kv-2"):
            expect(row(page, name)).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
        expect(row(page, "kv-0")).to_have_attribute("data-role", "manager")
        expect(row(page, "kv-1")).to_have_attribute("data-role", "follower")
        expect(row(page, "kv-2")).to_have_attribute("data-role", "follower")

    check(page, cluster, tmp_path, "three ready pods, kv-0 the manager", three_ready_pods)

    # A put from the page (forwarded by kv-2 to the manager), read back on the followers.
    page.fill("#kv-key", "from-the-page")
    page.fill("#kv-value", "hello from chromium")
    page.click("#kv-put")
    result = page.locator("#kv-result")

    def put_done() -> None:
        expect(result).to_have_attribute("data-ok", "true", timeout=WAIT_MS)
        expect(result).to_contain_text("put from-the-page: version 1", timeout=WAIT_MS)
        expect(result).to_have_attribute("data-served-by", "kv-0")

    check(page, cluster, tmp_path, "the put's answer", put_done)
    seq = result.get_attribute("data-seq")
    assert seq is not None
    page.click("#kv-get")

    def got_back() -> None:
        expect(result).to_have_attribute("data-served-by", "kv-2", timeout=WAIT_MS)
        expect(result).to_have_attribute("data-value", "hello from chromium")

    check(page, cluster, tmp_path, "the value read back on kv-2", got_back)
    read = cluster.kvstore(
        "get", "from-the-page", "--url", pods["kv-1"]["url"], "--min-seq", seq, "--timeout", "10"
    )
    assert read.stdout == "hello from chromium"

    # The put showed its key on every pod, side by side: the same value and version on each.
    check(page, cluster, tmp_path, "the key on every pod", lambda: key_on_every_pod(page, "1"))
    assert key_row(page, "kv-1").get_attribute("data-value") == "hello from chromium"

    # Live: a write from elsewhere reaches every pod's row without a click.
    cluster.kvstore("put", "from-the-page", "second value")
    check(page, cluster, tmp_path, "version 2 on every pod", lambda: key_on_every_pod(page, "2"))
    assert key_row(page, "kv-2").get_attribute("data-value") == "second value"

    # Any key of the list, clicked, is shown the same way.
    cluster.kvstore("put", "clicked/key", "clicked value")
    listed = page.locator('#keys button[data-key="clicked/key"]')

    def in_the_list() -> None:
        expect(listed).to_be_visible(timeout=WAIT_MS)

    check(page, cluster, tmp_path, "the new key in the list", in_the_list)
    listed.click()
    expect(page.locator("#key-name")).to_have_text("clicked/key")

    def clicked_on_every_pod() -> None:
        key_on_every_pod(page, "1")
        for name in ("kv-0", "kv-1", "kv-2"):
            expect(key_row(page, name)).to_have_attribute("data-value", "clicked value")

    check(page, cluster, tmp_path, "the clicked key on every pod", clicked_on_every_pod)
    page.click("#key-close")
    expect(page.locator("#key-view")).to_be_hidden()

    # kv-1 deleted: the page shows it gone, then back (on a new address, as a rescheduled pod).
    old_address = row(page, "kv-1").get_attribute("data-address")
    assert cluster.kvstore("local", "delete-pod", "kv-1").returncode == 0

    def gone_then_back() -> None:
        page.wait_for_function(BACK_AFTER_A_GAP, arg=["kv-1", old_address], timeout=WAIT_MS)

    check(page, cluster, tmp_path, "kv-1 gone, then back", gone_then_back)
    wait_for(lambda: cluster.pod("kv-1")["ready"], "kv-1 to be ready", cluster)

    # The page's own pod deleted: the page asks another pod and keeps following the set.
    assert cluster.kvstore("local", "delete-pod", "kv-2", "--force").returncode == 0

    def kv2_back() -> bool:
        kv2 = cluster.pod("kv-2")
        return bool(kv2["ready"]) and kv2["url"] != pods["kv-2"]["url"]

    wait_for(kv2_back, "kv-2 to be ready on a new address", cluster)
    new_address = cluster.pod("kv-2")["url"].removeprefix("http://")

    def still_following() -> None:
        expect(page.locator("#banner")).to_contain_text("no longer answers", timeout=WAIT_MS)
        expect(row(page, "kv-2")).to_have_attribute("data-address", new_address, timeout=WAIT_MS)
        expect(row(page, "kv-2")).to_have_attribute("data-state", "ready", timeout=WAIT_MS)

    check(page, cluster, tmp_path, "the set after its own pod went away", still_following)
