"""The docs site: ``mkdocs build --strict`` offline, the CLI page against ``--help``, no
network resources in the built HTML, and the report screenshots the build makes from the
demo (docs/hooks.py, docs/screenshots.py).

The site is built once per session, in a network namespace without any interface but a
down loopback when ``unshare`` can make one (as root, or with user namespaces), so any
fetch during the build fails it. The screenshots need Chromium (``ci/install-chromium.sh``);
without it the site is built without them and their test is skipped.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _load_screenshots():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("bids_deface_docs_screenshots",
                                                  REPO / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


screenshots = _load_screenshots()


def _chromium() -> str | None:
    try:
        return screenshots.find_chromium()
    except screenshots.ScreenshotError:
        return None


def _offline_prefix() -> list[str]:
    """A command prefix that runs its command with no network, or [] when none can be made."""
    unshare = shutil.which("unshare")
    if not unshare:
        return []
    for prefix in ([unshare, "--net"], [unshare, "--net", "--map-root-user"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return []


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ}
    env.pop("BIDS_DEFACE_DOCS_DEMO", None)  # the build makes its screenshots afresh
    chromium = _chromium()
    if chromium:
        env["BIDS_DEFACE_CHROMIUM"] = chromium
        env["BIDS_DEFACE_DOCS_SCREENSHOTS"] = "1"
    else:
        env["BIDS_DEFACE_DOCS_SCREENSHOTS"] = "0"
    offline = _offline_prefix()
    proc = subprocess.run([*offline, str(BIN / "mkdocs"), "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return {"dir": out, "proc": proc, "offline": bool(offline), "screenshots": bool(chromium)}


def test_site_builds_strict_and_offline(site: dict) -> None:
    proc = site["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (site["dir"] / "index.html").exists()
    if os.environ.get("CI") and not site["offline"]:
        pytest.fail("CI could not build the site in a network namespace (unshare)")


def _page(site: dict, name: str) -> str:
    if site["proc"].returncode != 0:
        pytest.fail("the site did not build (see test_site_builds_strict_and_offline)")
    return (site["dir"] / name).read_text(encoding="utf-8")


def _help(command: str) -> str:
    proc = subprocess.run([str(BIN / command), "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "88"}, check=True)
    return proc.stdout


@pytest.mark.parametrize("command, module", [("bids-deface", "bids_deface.cli.parser"),
                                             ("bids-deface-file", "bids_deface.cli.file")])
def test_cli_page_holds_the_help_of_each_command(site: dict, command: str, module: str) -> None:
    import importlib

    page = _page(site, "cli.html")
    blocks = [html.unescape(b) for b in re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", page, re.S)]
    assert _help(command).rstrip("\n") in [b.rstrip("\n") for b in blocks]
    parser = importlib.import_module(module).build_parser()
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text, option
            assert f"<code>{html.escape(option)}</code>" in page, f"{option} has no row in the table"


def test_no_resource_is_loaded_from_the_network(site: dict) -> None:
    remote = re.compile(r"""(?:<script[^>]*\ssrc|<link[^>]*\shref|<img[^>]*\ssrc|<iframe[^>]*\ssrc)"""
                        r"""\s*=\s*["']?(?:https?:)?//""", re.I)
    css_remote = re.compile(r"""(?:url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:url\()?\s*["']?(?:https?:)?//)""", re.I)
    if site["proc"].returncode != 0:
        pytest.fail("the site did not build")
    pages = list(site["dir"].rglob("*.html"))
    assert len(pages) > 20
    for path in pages:
        text = path.read_text(encoding="utf-8")
        assert not remote.search(text), f"{path.name}: {remote.search(text).group(0)}"
        assert not css_remote.search(text), path.name
    for path in site["dir"].rglob("*.css"):
        assert not css_remote.search(path.read_text(encoding="utf-8", errors="replace")), path.name


def test_pages_from_outside_docs_are_in_the_site(site: dict) -> None:
    index = _page(site, "index.html")
    # the README's first screen, with its measured result, is the site's index
    result = re.search(r"\*\*(\d+ of \d+)\s", (REPO / "README.md").read_text(encoding="utf-8"))
    assert result is not None
    assert result.group(1) in index and 'src="figures/before-after.png"' in index
    assert 'href="model-card.html"' in index and 'href="changelog.html"' in index
    assert "Dataset801_FaceEars" in _page(site, "model-card.html")
    # the model card's links point at the site's pages, not at ../docs/
    assert 'href="../docs/' not in _page(site, "model-card.html")


def test_readme_figure_is_small() -> None:
    figure = REPO / "docs" / "figures" / "before-after.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size < 200_000


def test_report_page_shows_screenshots_made_by_the_build(site: dict) -> None:
    if not site["screenshots"]:
        pytest.skip("no Chromium here (ci/install-chromium.sh installs it): built without screenshots")
    from PIL import Image

    page = _page(site, "report.html")
    for name in ("report-subject.png", "report-group.png"):
        assert f'src="figures/generated/{name}"' in page
        with Image.open(site["dir"] / "figures" / "generated" / name) as im:
            assert im.format == "PNG" and im.width >= 1000
    with Image.open(site["dir"] / "figures" / "generated" / "report-subject.png") as im:
        assert im.height > 1500  # the summary and the first image's section with its figures
    # made by this build, not copied from the checkout
    assert not (REPO / "docs" / "figures" / "generated").exists()


def test_links_out_of_docs_are_rewritten_for_the_site() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bids_deface_docs_hooks", REPO / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)  # type: ignore[union-attr]
    readme = ("See [install](docs/install.md#pip), [the card](models/MODEL_CARD.md), the "
              "[Dockerfile](Dockerfile) and `[not a link](docs/x.md)`.\n```\n[in code](Dockerfile)\n```")
    out = hooks.rewrite_links(readme, "README.md", "index.md")
    assert "[install](install.md#pip)" in out and "[the card](model-card.md)" in out
    assert "the `Dockerfile` and `[not a link](docs/x.md)`" in out
    assert "[in code](Dockerfile)" in out
    card = "[mask](../docs/mask.md) and [small heads](../benchmarks/small_heads.md)"
    assert hooks.rewrite_links(card, "models/MODEL_CARD.md", "model-card.md") == \
        "[mask](mask.md) and [small heads](benchmarks/small_heads.md)"
    page = "[decision](../../benchmarks/folds/DECISION.md), [script](../../benchmarks/speed.py)"
    assert hooks.rewrite_links(page, "docs/validation/README.md", "validation/README.md") == \
        "[decision](../benchmarks/folds/DECISION.md), script (`benchmarks/speed.py`)"
    assert hooks.gfm_slug("OpenNeuro layout (`--output-layout raw`)") == "openneuro-layout---output-layout-raw"
