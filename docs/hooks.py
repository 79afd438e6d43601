"""MkDocs hooks of the docs site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

At build time they

- generate ``cli.md``, the command-line reference, from the argparse parsers
  (``bids_deface.cli.parser.build_parser`` and ``bids_deface.cli.file.build_parser``): each
  command's ``--help`` text as the program prints it at 88 columns, and a table of its
  options;
- include files kept outside ``docs/`` as pages (:data:`INCLUDED`): the README as the home
  page, the model card, the changelog and the standing benchmarks' pages;
- rewrite the relative links of every page to the site's pages: a link to a repository
  file that is not a page (a script, ``Dockerfile``) becomes its repository path as code,
  and a link to a file that does not exist is a warning, so ``mkdocs build --strict``
  fails on it;
- make the report screenshots from the demo (``docs/screenshots.py``) and put them into
  the site, where ``docs/report.md`` shows them (its ``<!-- report-screenshots -->``
  marker). ``BIDS_DEFACE_DOCS_SCREENSHOTS=0`` builds without them (the page says so);
  ``BIDS_DEFACE_DOCS_DEMO=DIR`` takes the reports of a finished demo run instead of
  running the app;
- give headings GitHub's anchors, so that links written for the repository's Markdown
  (``outputs.md#openneuro-layout---output-layout-raw``) hold on the site too.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.bids_deface")

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

#: Repository files outside docs/ shown as pages: repository path -> page in the site.
INCLUDED = {
    "README.md": "index.md",
    "models/MODEL_CARD.md": "model-card.md",
    "CHANGELOG.md": "changelog.md",
    "benchmarks/small_heads.md": "benchmarks/small_heads.md",
    "benchmarks/folds/DECISION.md": "benchmarks/folds/DECISION.md",
    "benchmarks/qc_speed.md": "benchmarks/qc_speed.md",
    "benchmarks/reface.md": "benchmarks/reface.md",
    "benchmarks/reface_speed.md": "benchmarks/reface_speed.md",
}
#: Included files that may be missing (written by a benchmark that has not run yet).
OPTIONAL = {"benchmarks/qc_speed.md"}
#: The generated command-line reference.
CLI_PAGE = "cli.md"
#: Where the report screenshots go in the site, and the marker of docs/report.md.
SHOTS_DIR = "figures/generated"
SHOTS_MARKER = "<!-- report-screenshots -->"
#: Width of the help text (the test of docs/usage.md uses the same).
HELP_COLUMNS = "88"

_state: dict[str, object] = {}


# --------------------------------------------------------------------------- anchors

def gfm_slug(value: str, separator: str = "-") -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, each space a hyphen.

    >>> gfm_slug("OpenNeuro layout (--output-layout raw)")
    'openneuro-layout---output-layout-raw'
    >>> gfm_slug("Singularity / Apptainer")
    'singularity--apptainer'
    """
    value = html.unescape(value).strip().lower()
    value = re.sub(r"[^\w\- ]", "", value)
    return value.replace(" ", separator)


#: Pages of OPTIONAL files, put into the navigation when they exist: (section, title, page).
OPTIONAL_NAV = [("Performance", "QC speed", "benchmarks/qc_speed.md")]


def on_config(config):  # type: ignore[no-untyped-def]
    config["mdx_configs"].setdefault("toc", {})["slugify"] = gfm_slug
    for section, title, page in OPTIONAL_NAV:
        repo_path = next(k for k, v in INCLUDED.items() if v == page)
        if not (REPO / repo_path).exists():
            continue
        for i, item in enumerate(config["nav"] or []):
            if isinstance(item, dict) and section in item:
                entry = item[section]
                entries = entry if isinstance(entry, list) else [entry]
                config["nav"][i] = {section: [*entries, {title: page}]}
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return config


# --------------------------------------------------------------------------- CLI page

def _help_text(parser) -> str:  # type: ignore[no-untyped-def]
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        return parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _cell(text: str) -> str:
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([|*_\[\]])", r"\\\1", text)


def _options_table(parser) -> list[str]:  # type: ignore[no-untyped-def]
    import argparse

    formatter = parser._get_formatter()
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        lines += ["", f"**{group.title}**", "", "| option | value | default | what it does |",
                  "|---|---|---|---|"]
        for action in actions:
            names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
            if action.choices:
                value = ", ".join(f"`{c}`" for c in action.choices)
            elif action.nargs == 0 or not action.option_strings:
                value = ""
            else:
                metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
                value = f"`{metavar}`" + (" …" if action.nargs in ("+", "*") else "")
            default = action.default
            if (default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0
                    or not action.option_strings):
                shown = ""
            elif isinstance(default, (list, tuple)):
                shown = " ".join(f"`{d}`" for d in default)
            else:
                shown = f"`{default}`"
            what = _cell(formatter._expand_help(action)) if action.help else ""
            lines.append(f"| {names} | {value} | {shown} | {what} |")
    return lines


def cli_markdown() -> str:
    """The command-line reference page, made from the parsers."""
    from bids_deface.cli.file import build_parser as file_parser
    from bids_deface.cli.parser import build_parser

    out = ["# Command-line reference", "",
           "Made from the argparse parsers of the installed bids-deface when this site was built "
           "(`bids_deface.cli.parser.build_parser`, `bids_deface.cli.file.build_parser`): each "
           "block below is what the command prints for `--help` (at 88 columns). How the options "
           "fit together, with examples: [Usage](usage.md); exit codes: "
           "[Usage](usage.md#reruns-failures-and-exit-codes)."]
    for title, parser, intro in (
            ("bids-deface", build_parser(),
             "The BIDS App: `bids-deface BIDS_DIR OUTPUT_DIR participant|group [options]`."),
            ("bids-deface-file", file_parser(),
             "One image in, one defaced image out, outside any BIDS dataset.")):
        out += ["", f"## {title}", "", intro, "", "```text", _help_text(parser).rstrip("\n"), "```",
                "", "### Options", *_options_table(parser)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- screenshots

def _screenshots_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bids_deface_docs_screenshots", DOCS / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _screenshots() -> dict[str, bytes] | None:
    """The report screenshots by file name, made once per process; None when switched off."""
    if os.environ.get("BIDS_DEFACE_DOCS_SCREENSHOTS", "1") == "0":
        return None
    if "shots" not in _state:
        import tempfile

        shots = _screenshots_module()
        demo = os.environ.get("BIDS_DEFACE_DOCS_DEMO")
        with tempfile.TemporaryDirectory(prefix="bids-deface-docs-") as tmp:
            log.info("making the report screenshots from the demo%s", f" in {demo}" if demo else "")
            paths = shots.report_screenshots(Path(tmp), Path(demo) if demo else None)
            _state["shots"] = {p.name: p.read_bytes() for p in paths}
    return _state["shots"]  # type: ignore[return-value]


def _shots_markdown(page_dir: str) -> str:
    shots = _state.get("shots")
    if not shots:
        return ("*The screenshots of the demo's reports are made by the docs build; this build "
                "was made without them (`BIDS_DEFACE_DOCS_SCREENSHOTS=0`).*")
    rel = posixpath.relpath(SHOTS_DIR, page_dir or ".")
    return (f"![The demo's subject report, sub-01: the summary and its first image]({rel}/report-subject.png)\n\n"
            "*The subject report of the demo's adult-size head (`bash scripts/demo.sh`, "
            "`out/demo/sub-01.html`), as headless Chromium shows it; made by the docs build. "
            "Only the first of its two images is shown.*\n\n"
            f"![The demo's group report]({rel}/report-group.png)\n\n"
            "*The demo's group report (`out/demo/group.html`).*")


# --------------------------------------------------------------------------- files

def on_files(files: Files, config) -> Files:  # type: ignore[no-untyped-def]
    _state["sources"] = {}
    for repo_path, page in INCLUDED.items():
        source = REPO / repo_path
        if not source.exists():
            if repo_path not in OPTIONAL:
                log.warning("%s is missing: the site has no %s page", repo_path, page)
            continue
        files.append(File.generated(config, page, content=source.read_text(encoding="utf-8")))
        _state["sources"][page] = repo_path  # type: ignore[index]
    files.append(File.generated(config, CLI_PAGE, content=cli_markdown()))
    shots = _screenshots()
    for name, data in (shots or {}).items():
        files.append(File.generated(config, f"{SHOTS_DIR}/{name}", content=data))
    return files


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE = re.compile(r"(`+)[^`\n]*?\1")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PAGES_BY_SOURCE = INCLUDED  # repository path -> page


def _resolve(target: str, source: str, page_src: str) -> str | None:
    """The link ``target`` of a page made from repository file ``source``, for the site;
    None when it stays as written."""
    path, _, anchor = target.partition("#")
    anchor = f"#{anchor}" if anchor else ""
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    page_dir = posixpath.dirname(page_src)
    if repo_path.startswith("docs/"):
        site_path = repo_path[len("docs/"):]
    elif repo_path in _PAGES_BY_SOURCE and (REPO / repo_path).exists():
        site_path = _PAGES_BY_SOURCE[repo_path]
    else:
        return None
    new = posixpath.relpath(site_path, page_dir or ".") + ("/" if path.endswith("/") else "") + anchor
    return None if new == target else new


def _rewrite_text(text: str, source: str, page_src: str, spans: list[str]) -> str:
    def repl(m: re.Match[str]) -> str:
        bang, target, title = m.group(1), m.group(3), m.group(4) or ""
        text = _unmask(m.group(2), spans)
        if _SCHEME.match(target) or target.startswith(("#", "/")):
            return m.group(0)
        new = _resolve(target, source, page_src)
        if new is not None:
            return f"{bang}[{text}]({new}{title})"
        path = target.partition("#")[0]
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if repo_path.startswith("docs/"):
            return m.group(0)  # MkDocs checks these itself
        if repo_path in _PAGES_BY_SOURCE and not (REPO / repo_path).exists():
            log.warning("%s links to %s, which does not exist (yet)", source, repo_path)
            return m.group(0)
        if repo_path.startswith("..") or not (REPO / repo_path).exists():
            log.warning("%s links to %s, which is not in the repository", source, repo_path)
            return m.group(0)
        if bang:
            log.warning("%s shows %s, which lies outside docs/: the site cannot show it", source, repo_path)
            return m.group(0)
        # a repository file that is not a page: its path, as code
        plain = text.strip("`")
        if plain in (repo_path, path, posixpath.basename(repo_path)):
            return f"`{repo_path}`"
        return f"{text} (`{repo_path}`)"
    return _LINK.sub(repl, text)


def rewrite_links(markdown: str, source: str, page_src: str) -> str:
    """Every relative link of ``markdown`` (repository file ``source``, site page
    ``page_src``) pointed at the site (see the module's docstring); code is left alone."""
    out: list[str] = []
    chunk: list[str] = []
    fence = None

    def flush() -> None:
        if chunk:
            # inline code spans are masked while links are looked for, then put back
            spans: list[str] = []

            def mask(m: re.Match[str]) -> str:
                spans.append(m.group(0))
                return f"\x00{len(spans) - 1}\x00"

            text = _CODE.sub(mask, "\n".join(chunk))
            out.append(_unmask(_rewrite_text(text, source, page_src, spans), spans))
            chunk.clear()

    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            flush()
            fence = m.group(1)
            out.append(line)
        elif fence is not None:
            if m and m.group(1) == fence:
                fence = None
            out.append(line)
        else:
            chunk.append(line)
    flush()
    return "\n".join(out)


def _unmask(text: str, spans: list[str]) -> str:
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)


def on_page_markdown(markdown: str, page, config, files) -> str:  # type: ignore[no-untyped-def]
    src = page.file.src_uri
    source = _state.get("sources", {}).get(src) or f"docs/{src}"  # type: ignore[union-attr]
    if src == CLI_PAGE:
        return markdown
    markdown = rewrite_links(markdown, source, src)
    if SHOTS_MARKER in markdown:
        markdown = markdown.replace(SHOTS_MARKER, _shots_markdown(posixpath.dirname(src)))
    return markdown
