"""Build the slide deck, keep its code in step with the sources, and check it in a real browser.

Every code block of talk/slides.md sits in a generated region, written by this script from its source:

    <!-- generated: code transformer.py MultiHeadAttention.forward nodoc -->
    ...whatever `update` writes here...
    <!-- end generated -->

Region kinds:
    code PATH NAME [nodoc] [from=TEXT]
                             the source of a function, class or Class.method of a Python file; nodoc leaves
                             the docstring out, from=TEXT starts at the first line of the body that begins with TEXT
    stage N                  a stage's heading, paper reference, file and summary, from stages/manifest.py
    stages-table             every stage of the manifest as a table
    pitfall NAME             a pitfall's title, its bug as a diff, symptom, paper and fix, from debug_pitfalls
    pitfalls-table           every pitfall, loud or silent, as a table
    make TARGET...           the make commands with their one-line descriptions, from the Makefile
    demo-model               what `make demo` shows and the demo model's size, from transformer.py

Commands (the Makefile's `slides`, `slides-static` and `slides-pdf` call them):
    update                   rewrite every generated region from its source
    check                    exit 1 when a region differs from what its source gives (edited by hand, or stale)
    serve                    serve the deck live with reveal-md (pinned in talk/package.json)
    static [--out DIR]       write the offline site (default talk/dist)
    pdf [--site DIR]         print the site to DIR/slides.pdf with headless Chromium
    verify [--site DIR]      open the site in headless Chromium: slides, images, console, requests
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TALK = Path(__file__).resolve().parent
ROOT = TALK.parent
SLIDES = TALK / "slides.md"
TEMPLATE = TALK / "template.html"
FIGURES = TALK / "figures"
DIST = TALK / "dist"
WEB = ROOT / "web"  # the translating page `make web` writes; the static site carries it in web/
NODE_MODULES = TALK / "node_modules"
REVEAL_MD = NODE_MODULES / "reveal-md" / "bin" / "reveal-md.js"
CHECK_SCRIPT = TALK / "check_deck.mjs"

# the figures `make figures` writes and the deck shows
FIGURE_NAMES = (
    "masks.png",
    "positional_encoding.png",
    "mha_shapes.png",
    "attention_heatmaps.png",
    "scaling.png",
    "residual_stream.png",
    "pitfall_training_curves.png",
    "lr_schedule.png",
    "translation.png",
    "ln_warmup.png",
    "m30k.png",
)

# The Chromium flags of a quiet, throw-away browser: no first-run dialogs, no calls home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

NODE_HINT = "Node.js 18.18 or newer is needed for the slides: install it from your package manager or nodejs.org"

# How reveal-md and reveal.js cut the markdown (see their sources): YAML front matter first, then slides
# separated by a line `---`, vertical slides by `----`, speaker notes after a line that matches
# `^s*notes?:` (reveal's regex in a JavaScript string, where "\s" is a plain "s").
FRONT_MATTER = re.compile(r"^(---[\n\r]([\w\W]+?)[\n\r]---)?([\w\W]*)")
SLIDE_SEPARATOR = re.compile(r"\r?\n---\r?\n")
VERTICAL_SEPARATOR = re.compile(r"\r?\n----\r?\n")
NOTES_SEPARATOR = re.compile(r"^s*notes?:", re.IGNORECASE | re.MULTILINE)
REGION = re.compile(r"<!-- generated: (?P<spec>.+?) -->\n(?P<body>.*?)<!-- end generated -->", re.DOTALL)
FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


class BuildError(Exception):
    """Something the user can fix; main() prints it as one line."""


class MissingTool(BuildError):
    """A program the command needs is not installed (exit status 2)."""


# -----------------------------------------------------------------------------
# Reading the deck
# -----------------------------------------------------------------------------


def read_deck(path: Path = SLIDES) -> str:
    return path.read_text(encoding="utf-8")


def deck_body(text: str) -> str:
    """The markdown after the YAML front matter, as reveal-md hands it to reveal.js."""
    return FRONT_MATTER.match(text).group(3)


def front_matter(text: str) -> str:
    return FRONT_MATTER.match(text).group(2) or ""


def split_slides(text: str) -> list[str]:
    """The slides of the deck, cut where reveal.js cuts them."""
    return SLIDE_SEPARATOR.split(deck_body(text))


def notes_of(slide: str) -> str | None:
    """The speaker notes of one slide, or None when it has none (reveal needs exactly one separator)."""
    parts = NOTES_SEPARATOR.split(slide)
    return parts[1].strip() if len(parts) == 2 else None


@dataclass(frozen=True)
class Region:
    spec: str  # what the region is generated from, e.g. "code transformer.py PositionalEncoding"
    body: str  # what slides.md holds between the markers
    line: int  # line number of the opening marker in slides.md
    start: int  # character offsets of the body
    end: int


def find_regions(text: str) -> list[Region]:
    return [
        Region(m["spec"].strip(), m["body"], text.count("\n", 0, m.start()) + 1, m.start("body"), m.end("body"))
        for m in REGION.finditer(text)
    ]


def unmanaged_code_lines(text: str) -> list[int]:
    """Line numbers of code fences outside every generated region: code that nobody keeps in step."""
    covered = [(r.start, r.end) for r in find_regions(text)]
    return [
        text.count("\n", 0, m.start()) + 1
        for m in FENCE.finditer(text)
        if not any(start <= m.start() < end for start, end in covered)
    ]


# -----------------------------------------------------------------------------
# Generating the regions
# -----------------------------------------------------------------------------


def fenced(language: str, code: str) -> str:
    code = code.rstrip("\n")
    if "```" in code:
        raise BuildError(f"a generated {language} block contains ``` and would end its own fence")
    return f"```{language}\n{code}\n```\n"


@functools.lru_cache(maxsize=64)
def parsed(source: str) -> ast.Module:
    """ast.parse, once per distinct text (a deck asks for many pieces of the same file)."""
    return ast.parse(source)


def python_source(path: Path, qualname: str, drop_docstring: bool = False, start: str | None = None) -> str:
    """The source of a top-level function or class, or Class.method, exactly as the file has it.

    drop_docstring leaves its docstring out; start keeps only the body from its first line that begins
    with that text (an excerpt of a long function), and fails when no line does.
    """
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if not path.is_file():
        raise BuildError(f"no file {where} to take {qualname} from")
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    scope: list[ast.stmt] = parsed(source).body
    node = None
    for part in qualname.split("."):
        node = next(
            (n for n in scope if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == part),
            None,
        )
        if node is None:
            raise BuildError(f"{where} has no function or class {qualname!r}")
        scope = node.body
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    keep = list(range(first, node.end_lineno + 1))
    docstring = node.body[0] if node.body else None
    if drop_docstring and isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant):
        if isinstance(docstring.value.value, str):
            dropped = set(range(docstring.lineno, docstring.end_lineno + 1))
            keep = [n for n in keep if n not in dropped]
    if start is not None:
        body_start = node.body[0].lineno
        begin = next((n for n in keep if n >= body_start and lines[n - 1].strip().startswith(start)), None)
        if begin is None:
            raise BuildError(f"{where}: no line of {qualname} starts with {start!r}")
        keep = [n for n in keep if n >= begin]
    return textwrap.dedent("\n".join(lines[n - 1] for n in keep))


@functools.cache
def pitfall_module():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        import debug_pitfalls
    except ImportError as error:
        raise BuildError(f"cannot import debug_pitfalls for the pitfall slides: {error}") from None
    if not hasattr(debug_pitfalls, "PITFALLS") or not hasattr(debug_pitfalls, "variant_diff"):
        raise BuildError("debug_pitfalls has no PITFALLS and variant_diff yet: the pitfall slides need both")
    return debug_pitfalls


def pitfall_entries() -> list:
    pitfalls = pitfall_module().PITFALLS
    return list(pitfalls.values()) if isinstance(pitfalls, dict) else list(pitfalls)


def pitfall_entry(name: str):
    for entry in pitfall_entries():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in pitfall_entries())
    raise BuildError(f"no pitfall {name!r} in debug_pitfalls.PITFALLS; there are {known}")


def loudness(entry) -> str:
    return "loud" if entry.loud else "silent"


def markdown_text(text: str) -> str:
    """Prose from a manifest, escaped so that markdown and HTML show it as written."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_|\[\]])", r"\\\1", text)


def slide_diff(diff: str) -> str:
    """A unified diff as a slide shows it: no file header, hunks marked without line numbers
    (they would change with every edit above the bug, and the audience does not need them)."""
    lines = diff.rstrip("\n").splitlines()
    while lines and lines[0].startswith(("--- ", "+++ ")):
        lines.pop(0)
    while lines and not lines[-1].strip():  # trailing context that is only blank lines
        lines.pop()
    return "\n".join("@@" if line.startswith("@@") else line for line in lines)


def catching_test(entry) -> str:
    """The test a pitfall names as the one that catches it, with the file that defines it."""
    # tests/test_properties.py is the file `make test-bugs` runs against every variant: look there first
    for path in sorted((ROOT / "tests").glob("test_*.py"), key=lambda p: (p.name != "test_properties.py", p.name)):
        tree = parsed(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == entry.caught_by for n in ast.walk(tree)):
            return f"`{entry.caught_by}` in `{path.relative_to(ROOT).as_posix()}`"
    raise BuildError(f"pitfall {entry.name}: caught_by names {entry.caught_by!r}, which no file in tests/ defines")


def make_targets() -> dict[str, str]:
    """Target -> one-line description, as `make help` reads them from the Makefile."""
    found = {}
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([a-zA-Z0-9_-]+):.*## (.*)$", line)
        if m:
            found[m[1]] = m[2].strip()
    return found


def transformer_module():
    """transformer.py (the demo's configuration and constants)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import transformer

    return transformer


def manifest():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from stages import manifest

    return manifest


def render_region(spec: str) -> str:
    """What a generated region holds, from its spec."""
    kind, *args = spec.split()
    if kind == "code":
        options = args[2:]
        starts = [o.removeprefix("from=") for o in options if o.startswith("from=")]
        if len(args) < 2 or any(o != "nodoc" and not o.startswith("from=") for o in options) or len(starts) > 1:
            raise BuildError(f"bad region {spec!r}: expected `code PATH NAME [nodoc] [from=TEXT]`")
        code = python_source(ROOT / args[0], args[1], "nodoc" in options, starts[0] if starts else None)
        return fenced("python", code)
    if kind == "stage":
        if len(args) != 1:
            raise BuildError(f"bad region {spec!r}: expected `stage N`")
        try:
            stage = manifest().get_stage(args[0])
        except ValueError as error:
            raise BuildError(str(error)) from None
        where = stage.path.relative_to(ROOT).as_posix()
        return (
            f"## Stage {stage.number} · {stage.title}\n\n"
            f'<p class="muted small">paper {stage.paper} · <code>{where}</code></p>\n\n'
            f"{stage.summary}\n"
        )
    if kind == "stages-table":
        rows = ["| # | stage | paper |", "|---:|---|---|"]
        for stage in manifest().STAGES:
            number = f"bonus {stage.number}" if stage.bonus else str(stage.number)
            rows.append(f"| {number} | {stage.title} | {stage.paper} |")
        return "\n".join(rows) + "\n"
    if kind == "pitfall":
        if len(args) != 1:
            raise BuildError(f"bad region {spec!r}: expected `pitfall NAME`")
        entry = pitfall_entry(args[0])
        return (
            f'### {markdown_text(entry.title)} <span class="tag {loudness(entry)}">{loudness(entry)}</span>\n\n'
            f"{fenced('diff', slide_diff(pitfall_module().variant_diff(entry.name)))}\n"
            f'<div class="facts">\n\n'
            f"**Symptom:** {markdown_text(entry.symptom)}\n\n"
            f"**Paper:** {markdown_text(entry.paper)} · **Fix:** {markdown_text(entry.fix)}\n\n"
            f"**Caught by:** {catching_test(entry)}\n\n"
            f"</div>\n"
        )
    if kind == "pitfalls-table":
        rows = ["| pitfall | | the test that catches it |", "|---|---|---|"]
        for entry in pitfall_entries():
            rows.append(f"| {markdown_text(entry.title)} | {loudness(entry)} | `{entry.caught_by}` |")
        return "\n".join(rows) + "\n"
    if kind == "demo-model":
        tf = transformer_module()
        c = tf.demo_config()
        return (
            f"- a progress bar: training steps, the loss falling, the learning rate of Eq. (3)\n"
            f"- a table of held-out examples: source, target, prediction, ✓ or ✗\n"
            f"- the last line: exact match over {tf.N_TEST} sequences it never saw in training\n\n"
            f'<p class="small muted">sequences of {tf.MIN_LEN} to {tf.MAX_LEN} symbols from {tf.N_SYMBOLS}; '
            f"d<sub>model</sub> = {c.d_model}, h = {c.n_heads}, N = {c.n_layers}, d<sub>ff</sub> = {c.d_ff}: "
            f"the paper's architecture, a toy size, on a CPU</p>\n"
        )
    if kind == "make":
        if not args:
            raise BuildError(f"bad region {spec!r}: expected `make TARGET...`")
        targets = make_targets()
        missing = [t.split()[0] for t in args if t.split("=")[0] not in targets and t not in targets]
        if missing:
            raise BuildError(f"region {spec!r}: the Makefile has no target {', '.join(missing)}")
        width = max(len(f"make {t}") for t in args)
        return fenced("bash", "\n".join(f"{'make ' + t:<{width}}  # {targets[t]}" for t in args))
    if kind == "m30k":
        return m30k_region(json.loads((TALK / "m30k.json").read_text(encoding="utf-8")))
    raise BuildError(f"unknown region kind {kind!r} in {spec!r}")


# What the tutorials report on test2016, German -> English, and how they measured it (their READMEs and notebooks).
M30K_ANCHORS = (
    ("pytorch-seq2seq (bentrevett), Transformer", "36.5", "lowercased spaCy tokens, greedy", "a GPU, ~2.5 min"),
    ("DGL's Transformer example", "36.45", "English → German, tokenized, beam 5", "a GPU"),
)


def m30k_region(data: dict) -> str:
    """The Multi30k slide's tables, from talk/m30k.json: the first test sentences, and our BLEU beside the tutorials'."""
    rows = ["| German (test2016) | reference | ours, beam 4 |", "|---|---|---|"]
    for e in data["examples"]:
        rows.append(
            f"| {markdown_text(e['source'])} | {markdown_text(e['reference'])} | {markdown_text(e['translation'])} |"
        )
    test = data["test2016"]
    rows += [
        "",
        "| test2016 BLEU | | measured as | trained on |",
        "|---|---:|---|---|",
        f"| **ours**, `make translate-m30k` | **{test['bleu_lowercase']:.1f}** ({test['bleu']:.1f} cased) "
        f"| sacreBLEU lowercased (cased), detokenized, beam {test['beam']} | 2 CPU cores, {data['train_minutes']:.1f} min |",
    ]
    rows += [f"| {name} | {bleu} | {how} | {hardware} |" for name, bleu, how, hardware in M30K_ANCHORS]
    return "\n".join(rows) + "\n"


def rendered(spec: str) -> str:
    """render_region, checked for text that would cut the slide apart in reveal.js."""
    out = render_region(spec)
    for line in out.splitlines():
        if line.strip() in ("---", "----") or NOTES_SEPARATOR.match(line):
            raise BuildError(f"region {spec!r} would produce the line {line!r}, which reveal.js reads as a separator")
    return out


def updated(text: str) -> str:
    """The deck with every generated region rewritten from its source."""
    pieces, last = [], 0
    for region in find_regions(text):
        pieces += [text[last : region.start], rendered(region.spec)]
        last = region.end
    return "".join(pieces) + text[last:]


def stale_regions(text: str) -> list[Region]:
    return [r for r in find_regions(text) if r.body != rendered(r.spec)]


# -----------------------------------------------------------------------------
# Node, reveal-md and Chromium
# -----------------------------------------------------------------------------


def node_env() -> dict[str, str]:
    # no update check against the registry, and no browser download by reveal-md's optional puppeteer
    return os.environ | {"NO_UPDATE_NOTIFIER": "1", "PUPPETEER_SKIP_DOWNLOAD": "1"}


def ensure_node_modules() -> str:
    """Path of node; installs the pinned packages of talk/package-lock.json when they are missing or stale."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise MissingTool(NODE_HINT)
    stamp = NODE_MODULES / ".package-lock.json"
    lock = TALK / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        print("installing the pinned reveal-md and playwright-core into talk/node_modules (npm ci) ...", flush=True)
        done = subprocess.run(
            [npm, "ci", "--omit=optional", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TALK,
            env=node_env(),
            capture_output=True,
            text=True,
        )
        if done.returncode:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise BuildError(f"npm ci in talk/ failed: {last}")
    return node


def find_chromium() -> str:
    """Debian's chromium (or $CHROMIUM); a MissingTool error saying how to get it otherwise."""
    wanted = os.environ.get("CHROMIUM")
    candidates = [wanted] if wanted else ["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise MissingTool(
        f"no Chromium found ({wanted or 'looked for chromium, chromium-browser, google-chrome'}): "
        "on Debian or Ubuntu run `apt-get install chromium`, or set CHROMIUM=/path/to/chrome"
    )


def missing_figures(figures: Path) -> list[str]:
    return [name for name in FIGURE_NAMES if not (figures / name).is_file()]


WEB_NOT_BUILT = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>The translating page is not built</title></head>
  <body style="font: 20px/1.5 system-ui, sans-serif; padding: 1.5em; color: #1d2433">
    <p><b>The translating page has not been built.</b></p>
    <p>Run <code>make web</code> (the numbers model; <code>make web RUN=runs/m30k</code> for Multi30k), then
      <code>make slides-static</code> again.</p>
  </body>
</html>
"""


def copy_web_page(out: Path, web: Path = WEB) -> bool:
    """The translating page into the site's web/, as `make web` wrote it; when it is not built, a page that says
    how to build it, so the slide's frame is never a broken one. Returns whether the real page went in."""
    built = (web / "index.html").is_file() and (web / "weights.js").is_file()
    if built:
        shutil.copytree(web, out / "web")
    else:
        (out / "web").mkdir()
        (out / "web" / "index.html").write_text(WEB_NOT_BUILT, encoding="utf-8")
    return built


def build_static(out: Path, figures: Path = FIGURES, web: Path = WEB) -> Path:
    """Write the offline site to out (index.html, reveal.js, highlight theme, figures, the translating page in
    web/). Returns index.html."""
    missing = missing_figures(figures)
    if missing:
        raise BuildError(f"{len(missing)} figures missing in {figures} ({', '.join(missing)}): run `make figures`")
    node = ensure_node_modules()
    out = out.resolve()
    if out.exists():
        if any(out.iterdir()) and not (out / "index.html").exists():
            raise BuildError(f"{out} exists and is not a previous build of the slides; not overwriting it")
        shutil.rmtree(out)
    # reveal-md builds from its working directory: give it one with just the deck, the page and the figures
    with tempfile.TemporaryDirectory(prefix="slides-src-") as staging:
        staging = Path(staging)
        shutil.copy2(SLIDES, staging / "slides.md")
        shutil.copy2(TEMPLATE, staging / "template.html")
        shutil.copytree(figures, staging / "figures")
        done = subprocess.run(
            [node, str(REVEAL_MD), "slides.md", "--static", str(out), "--static-dirs=figures"],
            cwd=staging,
            env=node_env(),
            capture_output=True,
            text=True,
        )
    index = out / "index.html"
    if done.returncode or not index.is_file():
        detail = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise BuildError(f"reveal-md --static failed (exit {done.returncode}): {detail}")
    copy_web_page(out, web)
    return index


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve a directory on 127.0.0.1 at a free port, in a thread; yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def open_in_browser(site: Path, screenshot: Path, timeout: float = 60.0) -> dict:
    """Open the site in headless Chromium (driven by playwright-core) and report what the page did:
    slides, notes, images, console errors, failed and non-local requests, the code blocks' text."""
    chromium = find_chromium()
    node = ensure_node_modules()
    with serve_directory(site) as url:
        done = subprocess.run(
            [node, str(CHECK_SCRIPT), url + "index.html", str(screenshot), chromium],
            cwd=TALK,
            env=node_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if done.returncode:
        detail = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise BuildError(f"the browser check could not run (exit {done.returncode}): {detail}")
    return json.loads(done.stdout)


def build_pdf(site: Path, out: Path) -> int:
    """Print the site with reveal's ?print-pdf layout to a PDF; returns its size in bytes."""
    chromium = find_chromium()
    if not (site / "index.html").is_file():
        raise BuildError(f"no {site / 'index.html'}: run `make slides-static` first")
    out = out.resolve()
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="slides-chromium-") as profile, serve_directory(site) as url:
        done = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--run-all-compositor-stages-before-draw",
                "--virtual-time-budget=20000",  # let reveal.js lay the print pages out before printing
                "--no-pdf-header-footer",
                f"--print-to-pdf={out}",
                url + "index.html?print-pdf",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    if not out.is_file():
        detail = (done.stderr.strip() or "no output").splitlines()[-1]
        raise BuildError(f"chromium wrote no PDF (exit {done.returncode}): {detail}")
    size = out.stat().st_size
    with out.open("rb") as f:
        header = f.read(5)
    if header != b"%PDF-" or size < 20_000:
        raise BuildError(f"{out} is not a real PDF of the deck ({size} bytes, starts with {header!r})")
    return size


def pdf_pages(path: Path) -> int:
    """Pages of a PDF, counted by its page objects (Chromium writes them uncompressed)."""
    return len(re.findall(rb"/Type\s*/Page\b", path.read_bytes()))


def serve() -> int:
    node = ensure_node_modules()
    missing = missing_figures(FIGURES)
    if missing:
        print(f"note: {len(missing)} figures are missing ({', '.join(missing)}); `make figures` writes them")
    print("serving the deck at http://localhost:1948/slides.md (Ctrl-C stops; S opens the speaker notes)")
    try:
        return subprocess.run(
            [node, str(REVEAL_MD), "slides.md", "--disable-auto-open"], cwd=TALK, env=node_env()
        ).returncode
    except KeyboardInterrupt:
        return 0


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = OneLineParser(prog="build_slides.py", description="Build and check the slide deck.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    commands.add_parser("update", help="rewrite the generated regions of slides.md from their sources")
    commands.add_parser("check", help="exit 1 when a generated region is stale or edited by hand")
    commands.add_parser("serve", help="serve the deck live with reveal-md")
    static = commands.add_parser("static", help="write the offline site")
    static.add_argument("--out", type=Path, default=DIST)
    pdf = commands.add_parser("pdf", help="print the offline site to slides.pdf with headless Chromium")
    pdf.add_argument("--site", type=Path, default=DIST)
    verify = commands.add_parser("verify", help="open the offline site in headless Chromium and report")
    verify.add_argument("--site", type=Path, default=DIST)
    args = parser.parse_args(argv)
    console = Console()
    err = Console(stderr=True)

    try:
        if args.command == "update":
            text = read_deck()
            new = updated(text)
            changed = [r.spec for r in stale_regions(text)]
            SLIDES.write_text(new, encoding="utf-8")
            summary = f"{len(find_regions(new))} generated regions, {len(changed)} rewritten"
            console.print(f"talk/slides.md: {summary}" + "".join(f"\n  rewrote: {spec}" for spec in changed))
            return 0
        if args.command == "check":
            stale = stale_regions(read_deck())
            for region in stale:
                err.print(f"talk/slides.md:{region.line}: region `{region.spec}` differs from its source")
            if stale:
                err.print("run `make slides-static` (or `python talk/build_slides.py update`) to regenerate them")
                return 1
            console.print("talk/slides.md: every generated region matches its source")
            return 0
        if args.command == "serve":
            return serve()
        if args.command == "static":
            start = time.perf_counter()
            index = build_static(args.out)
            slides = len(split_slides(read_deck()))
            console.print(
                f"wrote {index.relative_to(Path.cwd()) if index.is_relative_to(Path.cwd()) else index}: "
                f"{slides} slides, offline, in {time.perf_counter() - start:.1f} s"
            )
            if not (WEB / "weights.js").is_file():
                console.print("the translating page is not built: its slide says to run `make web` first")
            return 0
        if args.command == "pdf":
            start = time.perf_counter()
            out = args.site / "slides.pdf"
            size = build_pdf(args.site, out)
            console.print(
                f"wrote {out}: {pdf_pages(out)} pages, {size / 1e6:.1f} MB, in {time.perf_counter() - start:.1f} s"
            )
            return 0
        if args.command == "verify":
            with tempfile.TemporaryDirectory() as tmp:
                report = open_in_browser(args.site, Path(tmp) / "title.png")
            table = Table(title=f"{args.site} in headless Chromium {report['browserVersion']}")
            table.add_column("check")
            table.add_column("result")
            images = report["images"]
            table.add_row("slides", str(report["totalSlides"]))
            table.add_row("slides with speaker notes", str(report["slidesWithNotes"]))
            table.add_row("images loaded", f"{sum(i['naturalWidth'] > 0 for i in images)}/{len(images)}")
            table.add_row("console errors", str(len(report["consoleErrors"])))
            table.add_row("failed requests", str(len(report["failedRequests"])))
            table.add_row("requests leaving the machine", str(len(report["externalRequests"])))
            console.print(table)
            problems = report["consoleErrors"] + report["failedRequests"] + report["externalRequests"]
            return 1 if problems or any(i["naturalWidth"] == 0 for i in images) else 0
    except MissingTool as error:
        print(f"build_slides.py: {error}", file=sys.stderr)
        return 2
    except BuildError as error:
        print(f"build_slides.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
