"""Headless Chromium for the tests that look at pages the way a reviewer does."""

import shutil
import subprocess
from pathlib import Path

from tests.test_team import skip_unless_ci

# Any host name resolves to nothing: a page that needs the network shows that it does.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chromium() -> str:
    """The Chromium program; skipped on a developer's machine without it, failed in CI."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        program = shutil.which(name)
        if program:
            return program
    skip_unless_ci("Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def _arguments(profile: Path, wait_ms: int, window: str) -> list[str]:
    return [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        OFFLINE,
        # Virtual time: the page's scripts and requests run to completion first.
        f"--virtual-time-budget={wait_ms}",
    ]


def dump_dom(url: str, profile: Path, wait_ms: int = 10000, window: str = "1600,1000") -> str:
    """The page's DOM after its scripts ran, as HTML."""
    completed = subprocess.run(
        [*_arguments(profile, wait_ms, window), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def screenshot(
    url: str, path: Path, profile: Path, wait_ms: int = 10000, window: str = "1600,1000"
) -> None:
    """A PNG of the page, for a person to look at when a test fails."""
    subprocess.run(
        [*_arguments(profile, wait_ms, window), f"--screenshot={path}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
