"""Pictures of the reports for the docs, made from the demo (``scripts/demo.sh``'s run).

Runs bids-deface on ``examples/ds-synthetic`` (participant and group level, into a
temporary folder unless ``--demo-dir`` names a finished one), opens its reports in headless
Chromium (``file://`` URLs, no network) and writes PNG files::

    python docs/screenshots.py OUT_DIR                   # report-subject.png, report-group.png
    python docs/screenshots.py OUT_DIR --demo-dir out/demo
    python docs/screenshots.py --readme-figure docs/figures/before-after.png

The docs build (``docs/hooks.py``) calls :func:`report_screenshots` and puts its pictures
into the site; ``--readme-figure`` makes the README's committed before/after picture (the
surface renders of the demo's adult-size T1w). Chromium is ``$BIDS_DEFACE_CHROMIUM``, else
the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on ``PATH``
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_DATASET = REPO / "examples" / "ds-synthetic"
#: The subject whose report is shown (the adult-size head: T1w and T2w).
SUBJECT = "01"
WIDTH = 1200

# Scripts run in a copy of a report before its screenshot: each keeps one part of the page.
KEEP_FIRST_RUN = """
document.querySelectorAll('section.card[id]').forEach((s, i) => { if (i > 0) s.remove(); });
document.querySelectorAll('details').forEach(d => d.removeAttribute('open'));
"""
KEEP_RENDERS = """
const fig = document.querySelector('.renders').closest('.figure');
document.body.innerHTML = '';
document.body.style.padding = '12px';
document.body.appendChild(fig);
"""


class ScreenshotError(RuntimeError):
    """The demo or Chromium failed; the message says how."""


def find_chromium() -> str:
    """The Chromium binary to use (see the module's docstring)."""
    given = os.environ.get("BIDS_DEFACE_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise ScreenshotError("no Chromium found for the report screenshots: install it "
                          "(Debian: apt-get install chromium), set BIDS_DEFACE_CHROMIUM, or build "
                          "without them (BIDS_DEFACE_DOCS_SCREENSHOTS=0)")


def _bids_deface() -> list[str]:
    exe = Path(sys.executable).with_name("bids-deface")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from bids_deface.cli.run import main; sys.exit(main())"]


def run_demo(out_dir: Path) -> Path:
    """The demo's participant and group levels into ``out_dir`` (as ``scripts/demo.sh``).

    The participant level exits with 7 when a QC verdict is not ``pass``: the reports are
    complete then, so that is accepted; any other non-zero exit code is an error.
    """
    cmd = _bids_deface()
    for level, extra in (("participant", ["--no-progress"]), ("group", [])):
        proc = subprocess.run([*cmd, str(DEMO_DATASET), str(out_dir), level, *extra],
                              capture_output=True, text=True)
        if proc.returncode not in (0, 7):
            raise ScreenshotError(f"bids-deface {level} on {DEMO_DATASET} exited with "
                                  f"{proc.returncode}:\n{proc.stderr[-3000:]}")
    return out_dir


def _capture(chromium: str, html: Path, png: Path, height: int, script: str | None,
             width: int = WIDTH) -> None:
    """Chromium's screenshot of ``html`` (a copy with ``script`` run on load), trimmed."""
    with tempfile.TemporaryDirectory(prefix="bids-deface-shot-") as tmp:
        page = Path(tmp) / html.name
        text = html.read_text(encoding="utf-8")
        if script:
            text = text.replace("</body>", f"<script>{script}</script></body>", 1)
        page.write_text(text, encoding="utf-8")
        raw = Path(tmp) / "shot.png"
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-background-networking",
               "--disable-gpu", "--disable-extensions", "--disable-sync", "--disable-default-apps",
               "--disable-component-update", "--no-first-run", "--mute-audio", "--hide-scrollbars",
               "--force-device-scale-factor=1", f"--user-data-dir={Path(tmp) / 'profile'}",
               f"--window-size={width},{height}", f"--screenshot={raw}", page.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "HOME": tmp})
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(f"Chromium did not finish the screenshot of {html}") from exc
        if proc.returncode != 0 or not raw.exists():
            raise ScreenshotError(f"Chromium failed on {html} (exit code {proc.returncode}):\n"
                                  f"{proc.stderr[-2000:]}")
        _trim(raw, png)


def _trim(raw: Path, png: Path, margin: int = 16) -> None:
    """Crop the page's background below (and, for a figure, beside) the content; 256 colours."""
    import numpy as np
    from PIL import Image

    im = Image.open(raw).convert("RGB")
    arr = np.asarray(im)
    background = arr[-1, -1]
    content = (arr != background).any(axis=2)
    rows = np.flatnonzero(content.any(axis=1))
    cols = np.flatnonzero(content.any(axis=0))
    if rows.size:
        top = max(int(rows[0]) - margin, 0)
        bottom = min(int(rows[-1]) + 1 + margin, arr.shape[0])
        left = max(int(cols[0]) - margin, 0)
        right = min(int(cols[-1]) + 1 + margin, arr.shape[1])
        im = im.crop((left, top, right, bottom))
    png.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=256).save(png, optimize=True)


def report_screenshots(out_dir: Path, demo_dir: Path | None = None) -> list[Path]:
    """``report-subject.png`` (the top of sub-01's report and its first image) and
    ``report-group.png`` (the group report) in ``out_dir``, from the demo's reports."""
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="bids-deface-demo-") as tmp:
        demo = demo_dir or run_demo(Path(tmp) / "demo")
        subject = demo / f"sub-{SUBJECT}.html"
        group = demo / "group.html"
        for report in (subject, group):
            if not report.exists():
                raise ScreenshotError(f"the demo wrote no {report}")
        shots = [out_dir / "report-subject.png", out_dir / "report-group.png"]
        _capture(chromium, subject, shots[0], 4200, KEEP_FIRST_RUN)
        _capture(chromium, group, shots[1], 1400, None)
    return shots


def readme_figure(png: Path, demo_dir: Path | None = None) -> Path:
    """The surface renders before and after defacing of the demo's sub-01 T1w."""
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="bids-deface-demo-") as tmp:
        demo = demo_dir or run_demo(Path(tmp) / "demo")
        _capture(chromium, demo / f"sub-{SUBJECT}.html", png, 1200, KEEP_RENDERS, width=760)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, nargs="?", help="where the report screenshots go")
    parser.add_argument("--demo-dir", type=Path, help="a finished demo output to use instead of a new run")
    parser.add_argument("--readme-figure", type=Path, metavar="PNG",
                        help="write the before/after renders picture here")
    args = parser.parse_args(argv)
    if not args.out_dir and not args.readme_figure:
        parser.error("give OUT_DIR, --readme-figure or both")
    try:
        if args.out_dir:
            for path in report_screenshots(args.out_dir, args.demo_dir):
                print(path)
        if args.readme_figure:
            print(readme_figure(args.readme_figure, args.demo_dir))
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
