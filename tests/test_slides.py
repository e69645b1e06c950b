"""The slide deck (talk/slides.md): its structure, its code in step with the sources, and the offline site
opened in a real headless Chromium.

The browser tests need node, talk/node_modules (`npm ci` in talk/) and Debian's chromium. Without them they
skip, saying what is missing; on CI (env CI set) they fail instead, because .ci/run installs all three.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import struct
import zlib
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parent.parent
TALK = ROOT / "talk"


bs = load_module(TALK / "build_slides.py")
DECK = bs.read_deck()
SLIDES = bs.split_slides(DECK)
REGIONS = bs.find_regions(DECK)


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def title_of(slide: str) -> str:
    m = re.search(r"^#+ (.+)$", slide, re.MULTILINE)
    return m[1].strip() if m else slide.strip().splitlines()[0][:60]


def slide_text(slide: str) -> str:
    """What a slide shows: no HTML comments (reveal's slide attributes, generated-region markers), no notes."""
    shown = bs.NOTES_SEPARATOR.split(slide)[0]
    return re.sub(r"<!--.*?-->", "", shown, flags=re.DOTALL).strip()


# -----------------------------------------------------------------------------
# Structure
# -----------------------------------------------------------------------------


def test_the_deck_is_long_enough_for_a_30_minute_talk():
    assert len(SLIDES) >= 25, f"talk/slides.md has {len(SLIDES)} slides; a 30-minute talk needs at least 25"


def test_every_slide_with_content_has_speaker_notes():
    missing = [f"slide {i} ({title_of(s)!r})" for i, s in enumerate(SLIDES, 1) if slide_text(s) and not bs.notes_of(s)]
    assert not missing, (
        "these slides have no speaker notes (one line `Note:` followed by the notes, and no second such line): "
        + ", ".join(missing)
    )


def test_the_deck_has_no_vertical_slides():
    # the browser test counts slides with the `---` separator only
    assert not bs.VERTICAL_SEPARATOR.search(bs.deck_body(DECK)), "a line `----` makes a vertical slide; use `---`"


@pytest.mark.parametrize("region", REGIONS, ids=[r.spec for r in REGIONS])
def test_generated_region_matches_its_source(region):
    expected = bs.rendered(region.spec)
    if region.body != expected:
        diff = "\n".join(
            difflib.unified_diff(
                region.body.splitlines(), expected.splitlines(), "talk/slides.md", "source", lineterm="", n=1
            )
        )
        pytest.fail(
            f"talk/slides.md line {region.line}: the block generated from `{region.spec}` differs from its source "
            f"(edited by hand, or the source changed). Run `python talk/build_slides.py update` "
            f"(make slides-static does). Difference:\n{diff}"
        )


def test_every_code_block_is_generated_from_a_source():
    lines = bs.unmanaged_code_lines(DECK)
    assert not lines, (
        f"talk/slides.md has code fences outside a generated region at lines {lines}: code on a slide must come "
        "from transformer.py, a stage or a pitfall (see the region kinds in talk/build_slides.py)"
    )


def test_every_stage_has_a_section_with_code_or_a_picture():
    stages = bs.manifest().STAGES
    specs = {r.spec for r in REGIONS}
    missing = [f"{s.number} ({s.slug})" for s in stages if not s.bonus and f"stage {s.number}" not in specs]
    assert not missing, f"stages without a section in the deck (a `stage N` region): {', '.join(missing)}"
    for i, slide in enumerate(SLIDES, 1):
        stage_regions = [r for r in bs.find_regions(slide) if r.spec.startswith("stage ")]
        if stage_regions and "``" not in slide and "<img" not in slide:
            pytest.fail(f"slide {i} ({title_of(slide)!r}) opens a stage but shows neither code nor a picture")


def test_every_pitfall_has_a_slide_of_its_own():
    try:
        entries = bs.pitfall_entries()
    except bs.BuildError as error:
        pytest.fail(f"the pitfall slides cannot be built: {error}")
    per_slide = [sum(r.spec.startswith("pitfall ") for r in bs.find_regions(s)) for s in SLIDES]
    assert max(per_slide) <= 1, "a slide holds more than one pitfall; give each its own slide"
    specs = {r.spec for r in REGIONS}
    missing = [e.name for e in entries if f"pitfall {e.name}" not in specs]
    assert not missing, f"pitfalls without a slide (a `pitfall NAME` region): {', '.join(missing)}"


def test_the_deck_shows_every_figure_and_only_figures_that_make_figures_writes():
    shown = re.findall(r"""(?:src=["']|\]\()figures/([^"')]+)""", DECK)
    unknown = sorted(set(shown) - set(bs.FIGURE_NAMES))
    unused = sorted(set(bs.FIGURE_NAMES) - set(shown))
    assert not unknown, f"the deck shows figures that `make figures` does not write: {unknown}"
    assert not unused, f"figures that no slide shows: {unused}"


@cache
def model_parts() -> dict:
    """Class name -> an instance inside a demo-sized model, to resolve names such as EncoderLayer.self_attn."""
    tf = load_module(ROOT / "transformer.py")
    parts = {}
    for module in tf.Transformer(tf.demo_config()).modules():
        parts.setdefault(type(module).__name__, module)
    return {"module": tf, "instances": parts}


def resolves(name: str) -> bool:
    import torch

    first, *rest = name.removesuffix("()").split(".")
    roots = {"nn": torch.nn, "F": torch.nn.functional, "torch": torch}
    parts = model_parts()
    obj = roots.get(first, getattr(parts["module"], first, None))
    if obj is None:
        return False
    for attr in rest:
        instance = parts["instances"].get(getattr(obj, "__name__", None)) if isinstance(obj, type) else None
        if instance is not None and hasattr(instance, attr):
            obj = getattr(instance, attr)
        elif hasattr(obj, attr):
            obj = getattr(obj, attr)
        else:
            return False
    return True


def code_spans_outside_generated_regions() -> list[tuple[int, str]]:
    text = DECK
    for region in reversed(REGIONS):
        text = text[: region.start] + "\n" * region.body.count("\n") + text[region.end :]
    spans = []
    for m in re.finditer(r"`([^`\n]+)`|<code>(.*?)</code>", text):
        spans.append((text.count("\n", 0, m.start()) + 1, (m[1] or m[2]).strip()))
    return spans


def test_names_paths_and_make_commands_on_the_slides_exist():
    """A renamed class, a moved file or a dropped make target must not leave the slides behind."""
    identifier = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?$")
    targets = bs.make_targets()
    wrong = []
    for line, span in code_spans_outside_generated_regions():
        if span.startswith("make "):
            target = span.split()[1]
            if target not in targets:
                wrong.append(f"line {line}: `{span}` (the Makefile has no target {target!r})")
        elif "/" in span or span.endswith((".py", ".md", ".json")):
            if not (ROOT / span).exists():
                wrong.append(f"line {line}: `{span}` (no such file or folder in the repository)")
        elif identifier.match(span) and not resolves(span):
            wrong.append(f"line {line}: `{span}` (not a name in transformer.py or torch)")
    assert not wrong, "the slides mention things that do not exist: " + "; ".join(wrong)


def test_the_deck_and_its_page_ask_for_nothing_outside_the_machine():
    for path in (bs.SLIDES, bs.TEMPLATE):
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
        assert not urls, f"{path.relative_to(ROOT)} refers to addresses on the network: {urls}"
    page = bs.TEMPLATE.read_text(encoding="utf-8")
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert loaded, "template.html loads no script or stylesheet: the pattern no longer matches"
    for address in loaded:
        assert not re.search(r"math|mermaid|livereload", address), (
            f"template.html loads {address}: the math plugin and mermaid fetch from a CDN, livereload from a port"
        )


def test_reveal_md_is_pinned_to_one_version():
    package = json.loads((TALK / "package.json").read_text())
    lock = json.loads((TALK / "package-lock.json").read_text())
    for name in ("reveal-md", "playwright-core"):
        wanted = package["devDependencies"][name]
        assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), f"talk/package.json must pin {name} exactly, got {wanted!r}"
        locked = lock["packages"][f"node_modules/{name}"]["version"]
        assert locked == wanted, f"package-lock.json has {name} {locked}, package.json pins {wanted}: run npm install"


# -----------------------------------------------------------------------------
# The generator itself: it must notice drift, and refuse what reveal would cut apart
# -----------------------------------------------------------------------------


def test_a_block_edited_by_hand_is_reported_as_stale():
    region = next(r for r in REGIONS if r.spec.startswith("code "))
    edited = DECK[: region.start] + region.body.replace("(", "( ", 1) + DECK[region.end :]
    assert [r.spec for r in bs.stale_regions(edited)] == [region.spec], "a hand-edited code block went unnoticed"
    assert bs.stale_regions(bs.updated(edited)) == [], "update did not restore the edited block from its source"


def test_code_regions_follow_the_source(tmp_path, monkeypatch):
    source = tmp_path / "mod.py"
    source.write_text(
        'class A:\n    def f(self, x):\n        """Doc."""\n        y = x + 1\n        return y\n\n\ndef g():\n    return 2\n'
    )
    assert bs.python_source(source, "A.f") == 'def f(self, x):\n    """Doc."""\n    y = x + 1\n    return y'
    assert bs.python_source(source, "A.f", drop_docstring=True) == "def f(self, x):\n    y = x + 1\n    return y"
    assert bs.python_source(source, "A.f", start="return") == "return y"
    with pytest.raises(bs.BuildError, match="no function or class 'A.h'"):
        bs.python_source(source, "A.h")
    with pytest.raises(bs.BuildError, match="starts with 'z ='"):
        bs.python_source(source, "g", start="z =")


def test_a_region_that_would_cut_its_slide_apart_is_refused(monkeypatch):
    monkeypatch.setattr(bs, "render_region", lambda spec: "a\n---\nb\n")
    with pytest.raises(bs.BuildError, match="separator"):
        bs.rendered("code x.py y")
    monkeypatch.setattr(bs, "render_region", lambda spec: "Notes: not really\n")
    with pytest.raises(bs.BuildError, match="separator"):
        bs.rendered("code x.py y")


# -----------------------------------------------------------------------------
# The static site in headless Chromium
# -----------------------------------------------------------------------------


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A small valid RGB PNG (a gradient), a stand-in for a figure when `make figures` has not run."""
    rows = b""
    for y in range(height):
        pixels = [((x * 255 // width + 40 * seed) % 256, y * 255 // height, 128) for x in range(width)]
        rows += b"\x00" + bytes(channel for pixel in pixels for channel in pixel)  # filter byte 0, then RGB

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def browser_prerequisites() -> str | None:
    """What is missing for the browser test, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("reveal-md", "playwright-core"):
        if not (bs.NODE_MODULES / package / "package.json").exists():
            return f"talk/node_modules/{package} is missing (run `npm ci --omit=optional` in talk/)"
    try:
        bs.find_chromium()
    except bs.MissingTool as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = browser_prerequisites()
    if missing:
        if on_ci():
            pytest.fail(f"the browser test must run on CI, but {missing}: .ci/run installs chromium and runs npm ci")
        pytest.skip(f"browser test skipped: {missing}")
    figures = bs.FIGURES
    if bs.missing_figures(figures):  # `make figures` has not run: stand-ins with the same names
        figures = tmp_path_factory.mktemp("figures")
        for i, name in enumerate(bs.FIGURE_NAMES):
            (figures / name).write_bytes(png_bytes(160, 90, i))
    out = tmp_path_factory.mktemp("site") / "dist"
    bs.build_static(out, figures)
    screenshot = tmp_path_factory.mktemp("shot") / "title.png"
    report = bs.open_in_browser(out, screenshot)
    return {"dir": out, "report": report, "screenshot": screenshot}


def test_the_static_site_is_self_contained(site):
    index = (site["dir"] / "index.html").read_text(encoding="utf-8")
    assert "data-markdown" in index, "index.html does not hold the deck"
    for name in bs.FIGURE_NAMES:
        assert (site["dir"] / "figures" / name).is_file(), f"the static site lacks figures/{name}"


def test_the_browser_shows_as_many_slides_as_the_source_has(site):
    report = site["report"]
    assert report["totalSlides"] == len(SLIDES), (
        f"reveal.js made {report['totalSlides']} slides, talk/slides.md has {len(SLIDES)}: a separator was misread"
    )
    with_content = sum(1 for s in SLIDES if slide_text(s))
    assert report["slidesWithNotes"] == with_content, (
        f"the browser found speaker notes on {report['slidesWithNotes']} slides, the source has {with_content} "
        "slides with content: some notes were not recognised"
    )


def test_every_image_loads(site):
    images = site["report"]["images"]
    assert {Path(i["src"]).name for i in images} == set(bs.FIGURE_NAMES), "the page does not show every figure"
    broken = [i["src"] for i in images if i["naturalWidth"] == 0]
    assert not broken, f"images that did not load in the browser: {broken}"


def test_the_page_logs_no_error_and_no_request_fails_or_leaves_the_machine(site):
    report = site["report"]
    assert not report["consoleErrors"], f"console errors in the browser: {report['consoleErrors']}"
    assert not report["failedRequests"], f"requests that failed: {report['failedRequests']}"
    assert not report["externalRequests"], f"requests to other machines (blocked): {report['externalRequests']}"
    assert report["requests"] > 5, "the page made almost no requests: did it load reveal.js at all?"


def test_code_reaches_the_audience_unchanged(site):
    """reveal's markdown plugin strips indentation and decodes entities: the code shown must be the source."""
    in_source = [m[1] for r in REGIONS for m in re.finditer(r"```\w*\n(.*?)\n```", r.body, re.DOTALL)]
    shown = [block.rstrip("\n") for block in site["report"]["codeBlocks"]]
    assert len(shown) == len(in_source), f"the page shows {len(shown)} code blocks, the deck has {len(in_source)}"
    for expected, got in zip(in_source, shown, strict=True):
        assert got == expected, f"a code block reads differently in the browser:\n{got}\n--- expected ---\n{expected}"


def test_a_screenshot_of_the_title_slide_is_written(site):
    import matplotlib.image

    path = site["screenshot"]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 720), f"the screenshot is {width}x{height}, expected the 1280x720 viewport"
    pixels = matplotlib.image.imread(path)
    assert pixels.std() > 0.05, "the title slide screenshot is blank: nothing was drawn"
    assert site["report"]["slideTitles"][0].startswith("I Built a Transformer"), "the first slide is not the title"


def test_the_talk_readme_describes_the_deck_as_it_is():
    readme = (TALK / "README.md").read_text(encoding="utf-8")
    m = re.search(r"(\d+) slides", readme)
    assert m and int(m[1]) == len(SLIDES), (
        f"talk/README.md says {m[1] if m else 'nothing about how many'} slides, the deck has {len(SLIDES)}"
    )
    package = json.loads((TALK / "package.json").read_text())["devDependencies"]
    for name, version in package.items():
        assert f"{name} {version}" in readme, f"talk/README.md does not name the pinned {name} {version}"
