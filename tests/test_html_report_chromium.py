"""The HTML report of a run opened in headless Chromium (Debian package ``chromium``; .ci/run installs it when
missing): it renders without console errors, shows every section, and a screenshot is written. Skipped, saying why,
when no Chromium can start here."""
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_html_report import SECTIONS, finished_run  # noqa: F401 - the shared finished run

FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
         "--disable-extensions", "--no-first-run", "--allow-file-access-from-files"]


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it when it can)")


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    browser = _browser()
    try:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                              text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Chromium could not start here: {exc}")
    if done.returncode != 0 and not done.stdout:
        pytest.skip(f"Chromium could not start here (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return done


def _console(stderr: str) -> list[str]:
    """The page's console messages (Chromium logs them as ``:CONSOLE`` lines with --enable-logging=stderr)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_console_errors_are_caught_by_this_check(tmp_path):
    """The check below can fail: a page with a script error gives a CONSOLE line."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><p id="x">x</p><script>throw new Error("broken page")</script></body></html>')
    done = _chromium(["--dump-dom", bad.as_uri()], tmp_path)
    assert any("broken page" in line for line in _console(done.stderr))


def test_report_renders_every_section_without_console_errors(tmp_path, finished_run):  # noqa: F811
    page = finished_run / "report.html"
    done = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert _console(done.stderr) == []
    dom = done.stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom, f"section {section} missing from the rendered page"
    assert dom.count("<img") == 6
    shot = tmp_path / "report.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], tmp_path)
    assert _console(done.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a page with text and plots, not a blank one
