"""Check every report page in a real browser: ``python -m tcpkit.release.browsercheck reports/``.

Each ``*.html`` under the directory is loaded by headless Chromium at each width
(1280 and 800 px by default) and must render (a non-empty body), load every
image (``naturalWidth > 0``) and show no horizontal scrollbar
(``document.documentElement.scrollWidth <= window.innerWidth``). The page is
loaded from a temporary copy with a ``<base>`` pointing at the original folder
(relative links and images resolve as they would) and a small script that, on
``load``, writes its measurements into the DOM; ``chromium --dump-dom`` prints
that DOM and the measurements are read back. No Python dependency beyond the
standard library; Chromium is Debian's ``chromium`` package, installed with
``apt-get`` when it is missing (as root). Without a working browser the check
fails: it never skips.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WIDTHS = (1280, 800)
HEIGHT = 900
TIMEOUT_S = 60
MARKER = "tcpkit-browsercheck"

PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return (i.getAttribute("src") || "").slice(0, 80); });
  var body = document.body;
  var result = {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    images: images.length, broken: broken,
    height: body ? body.scrollHeight : 0, text: body ? body.innerText.trim().length : 0
  };
  var out = document.createElement("pre");
  out.id = "@MARKER@"; out.style.display = "none"; out.textContent = JSON.stringify(result);
  body.appendChild(out);
});
</script>""".replace("@MARKER@", MARKER)


class BrowserCheckError(RuntimeError):
    """No usable browser, or a page Chromium could not load at all."""


@dataclass(frozen=True)
class PageResult:
    """What the browser measured for one page at one width, and what is wrong (empty: fine)."""

    page: str
    width: int
    scroll_width: int
    inner_width: int
    images: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium(install: bool = True) -> str:
    """The path of ``chromium`` (or ``chromium-browser``), installing Debian's package if allowed.

    Raises
    ------
    BrowserCheckError
        When no browser is found and it cannot be installed (not root, no apt-get, apt failed).
    """
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if not install:
        raise BrowserCheckError("chromium is not on PATH (install Debian's package: apt-get install chromium)")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BrowserCheckError("chromium is not on PATH and cannot be installed here (needs apt-get as root): "
                                "run `apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install_cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(install_cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BrowserCheckError(f"apt-get install chromium failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("chromium")
    if not found:
        raise BrowserCheckError("apt-get installed chromium but it is not on PATH")
    return found


def probed_copy(page: Path, folder: Path) -> Path:
    """A copy of ``page`` in ``folder`` with a ``<base>`` at the page's own folder and the probe."""
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{html.escape(page.parent.resolve().as_uri(), quote=True)}/">'
    text, found = re.subn(r"<head>", "<head>" + base, text, count=1, flags=re.IGNORECASE)
    if not found:
        text = base + text
    text, found = re.subn(r"</body>", PROBE + "</body>", text, count=1, flags=re.IGNORECASE)
    if not found:
        text += PROBE
    copy = folder / f"{abs(hash(str(page)))}-{page.name}"
    copy.write_text(text, encoding="utf-8")
    return copy


def measure(browser: str, page: Path, width: int, root: Path) -> PageResult:
    """Load ``page`` at ``width`` px and return what the probe measured, with its problems."""
    name = str(page.relative_to(root)) if page.is_relative_to(root) else str(page)
    with tempfile.TemporaryDirectory(prefix="tcpkit-browsercheck-") as tmp:
        copy = probed_copy(page, Path(tmp))
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp}/profile",
               f"--window-size={width},{HEIGHT}", "--virtual-time-budget=10000",
               "--dump-dom", copy.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BrowserCheckError(f"{name}: chromium did not finish within {TIMEOUT_S} s") from None
    match = re.search(rf'<pre id="{MARKER}"[^>]*>(.*?)</pre>', done.stdout, flags=re.DOTALL)
    if match is None:
        raise BrowserCheckError(
            f"{name} at {width} px: the page did not finish loading in chromium (exit "
            f"{done.returncode}): {done.stderr.strip()[-400:]}")
    found = json.loads(html.unescape(match.group(1)))
    problems = []
    if found["innerWidth"] != width:
        problems.append(f"window is {found['innerWidth']} px wide, not {width}")
    if found["height"] <= 0 or found["text"] <= 0:
        problems.append("the page rendered empty")
    if found["broken"]:
        problems.append(f"{len(found['broken'])} of {found['images']} images did not load: "
                        + ", ".join(found["broken"][:3]))
    if found["scrollWidth"] > found["innerWidth"]:
        problems.append(f"horizontal scrollbar: content is {found['scrollWidth']} px wide "
                        f"in a {found['innerWidth']} px window")
    return PageResult(name, width, found["scrollWidth"], found["innerWidth"], found["images"],
                      tuple(problems))


def pages(reports: Path) -> list[Path]:
    """Every ``*.html`` under ``reports``, sorted."""
    return sorted(p for p in Path(reports).rglob("*.html") if p.is_file())


def check(reports: Path, widths: Sequence[int] = WIDTHS, install: bool = True) -> list[PageResult]:
    """Measure every page at every width.

    Raises
    ------
    BrowserCheckError
        No browser, no page to check, or a page that did not load.
    """
    found = pages(reports)
    if not found:
        raise BrowserCheckError(f"no *.html page under {reports}")
    browser = find_chromium(install)
    root = Path(reports)
    return [measure(browser, page, width, root) for page in found for width in widths]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print one line per page and width; exit 1 when anything is wrong."""
    parser = argparse.ArgumentParser(prog="python -m tcpkit.release.browsercheck", description=__doc__
                                     and __doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="folder of HTML reports (searched recursively)")
    parser.add_argument("--width", type=int, action="append", help="window width in px (repeatable; "
                        f"default {' and '.join(map(str, WIDTHS))})")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing chromium")
    args = parser.parse_args(argv)
    try:
        results = check(args.reports, tuple(args.width or WIDTHS), install=not args.no_install)
    except BrowserCheckError as exc:
        print(f"browsercheck FAILED: {exc}", file=sys.stderr)
        return 1
    for r in results:
        state = "ok  " if r.ok else "FAIL"
        print(f"{state} {r.page} @ {r.width}px: scrollWidth {r.scroll_width}, {r.images} images"
              + ("" if r.ok else " — " + "; ".join(r.problems)))
    bad = [r for r in results if not r.ok]
    print(f"browsercheck: {len(results) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
