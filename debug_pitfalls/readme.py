"""The README's pitfall section, generated from PITFALLS (`make pitfall-readme` writes it)."""

from __future__ import annotations

from .registry import PITFALLS, Pitfall
from .variants import ROOT

README = ROOT / "README.md"
START, END = "<!-- pitfalls:start -->", "<!-- pitfalls:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(pitfalls: tuple[Pitfall, ...] = PITFALLS) -> str:
    """The Markdown between the README's pitfall markers (without the markers)."""
    loud = sum(p.loud for p in pitfalls)
    lines = [
        "<!-- generated from debug_pitfalls/registry.py by `make pitfall-readme`; do not edit by hand -->",
        f"{len(pitfalls)} deliberately broken transformers, each `transformer.py` with one plausible bug "
        f"({len(pitfalls) - loud} silent, {loud} loud). Each variant is built from the current "
        "`transformer.py` by a few exact text substitutions, so it stays in step with the code.",
        "",
        "- `make pitfall NAME=<name>` shows one bug as a coloured diff against `transformer.py`.",
        "- `make test-bugs` runs the property tests of `tests/test_properties.py` against every variant, "
        "shows which test catches each bug, and fails if any bug goes uncaught or if `transformer.py` "
        "fails a test. `make test-bugs NAME=<name>` runs one, with pytest's tracebacks.",
        "",
        "| Pitfall | | The bug | What you see | Paper | See it |",
        "|---|---|---|---|---|---|",
    ]
    for p in pitfalls:
        cells = (p.title, p.kind, p.bug, p.symptom, p.paper, f"`make pitfall NAME={p.name}`")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def current_block(text: str) -> str:
    """What the README holds between the markers now."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md must hold {START} and then {END}, once each")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n")


def update(text: str) -> str:
    """README text with the pitfall block replaced by render()."""
    current_block(text)  # checks the markers
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"
