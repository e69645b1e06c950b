"""Keep the bonus stages in step with transformer.py.

A bonus stage is transformer.py with one declared change, then a demo of its own:

    bonus stage = its own docstring opening + transformer.py's docstring from "Shape legend" on
                + transformer.py after its docstring, without its `if __name__ == "__main__":` block,
                  where the DECLARED functions are the stage's own (changed, or added at the end)
                + its demo block: from the dashed header titled DEMO_TITLE to the end of the file

`check_in_step` names every function where a stage and transformer.py differ outside the declared
change; `rebuild` rewrites a stage from transformer.py, keeping its docstring opening, its declared
functions and its demo. `python tools/stages.py check` and `sync` run them with the main stages, and
tests/test_bonus.py runs the same check.
"""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages.layout import LayoutError, split_parts  # noqa: E402
from stages.manifest import DEMO_TITLE  # noqa: E402, F401 - tests/test_bonus.py reads it here

LEGEND = "Shape legend"

# What each bonus stage may change in transformer.py's functions (Class.method for methods, a class's
# name for the whole class with its docstring), and the top-level functions and classes it adds at the
# end of the library part.
DECLARED = {
    13: {"changed": ("MultiHeadAttention.forward",), "added": ()},
    14: {"changed": (), "added": ("KeyValueCache", "decode_step", "cached_greedy_decode", "cached_beam_search")},
    15: {
        "changed": ("AddAndNorm", "EncoderLayer.forward", "Encoder", "DecoderLayer.forward", "Decoder"),
        "added": (),
    },
}


def split_file(text: str, name: str) -> tuple[str, list[str], str]:
    """(module docstring, library lines, demo block): stages/layout.py's parts, the library without the
    `if __name__ == "__main__":` block of transformer.py and without trailing blank lines."""
    parts = split_parts(text, name)
    return parts.docstring, parts.library_lines(name), parts.demo


def unit_of_each_line(lines: list[str]) -> list[str]:
    """Which top-level function or class (methods as Class.method) each line belongs to. Comments and
    blank lines just above a definition belong to it; other module-level code is named by its line."""
    owner: list[str | None] = [None] * len(lines)
    for node in ast.parse("\n".join(lines)).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        name = getattr(node, "name", None) or f"module-level code `{lines[node.lineno - 1].strip()[:40]}`"
        for i in range(start - 1, node.end_lineno):
            owner[i] = name
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    first = min([item.lineno] + [d.lineno for d in item.decorator_list])
                    for i in range(first - 1, item.end_lineno):
                        owner[i] = f"{node.name}.{item.name}"
        above = start - 2
        while (
            above >= 0 and owner[above] is None and (not lines[above].strip() or lines[above].lstrip().startswith("#"))
        ):
            owner[above] = name
            above -= 1
    return [name or "the end of the file" for name in owner]


def drift(reference_lines: list[str], bonus_lines: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The units the diff from transformer.py to the bonus stage touches: {name: first line} on each side."""
    units_a, units_b = unit_of_each_line(reference_lines), unit_of_each_line(bonus_lines)
    touched_a: dict[str, int] = {}
    touched_b: dict[str, int] = {}
    matcher = difflib.SequenceMatcher(None, reference_lines, bonus_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            touched_a.setdefault(units_a[i], i + 1)
        for j in range(j1, j2):
            touched_b.setdefault(units_b[j], j + 1)
    return touched_a, touched_b


def _is_added(name: str, number: int) -> bool:
    return name.split(".")[0] in DECLARED[number]["added"]


def _within(unit: str, declared: str) -> bool:
    """A unit is within a declared name when it is that name, or a method of that declared class."""
    return unit == declared or unit.startswith(declared + ".")


def _is_changed(name: str, number: int) -> bool:
    return any(_within(name, declared) for declared in DECLARED[number]["changed"])


def check_in_step(number: int, reference: str, bonus: str) -> list[str]:
    """Plain-words problems; empty when bonus stage `number` is transformer.py plus its declared change."""
    changed = DECLARED[number]["changed"]
    try:
        reference_doc, reference_lines, _ = split_file(reference, "transformer.py")
        bonus_doc, bonus_lines, _ = split_file(bonus, f"stage {number}")
    except LayoutError as error:
        return [str(error)]
    problems = []
    shared = reference_doc[reference_doc.find(LEGEND) :]
    if LEGEND not in reference_doc or not bonus_doc.endswith(shared):
        problems.append(
            f"stage {number}'s docstring must end with transformer.py's, from {LEGEND!r} on (legend, masks, deviations)"
        )
    touched_ref, touched_bonus = drift(reference_lines, bonus_lines)
    for name, line in touched_ref.items():
        if not _is_changed(name, number):
            problems.append(
                f"`{name}` (transformer.py, line {line} after the docstring) differs in stage {number}: "
                "carry transformer.py's change over (python tools/stages.py sync)"
            )
    for name, line in touched_bonus.items():
        if not _is_changed(name, number) and not _is_added(name, number) and name not in touched_ref:
            problems.append(
                f"stage {number} changes `{name}` (line {line} after its docstring), which it does not declare"
            )
    for name in (*changed, *DECLARED[number]["added"]):
        if not any(_within(unit, name) for unit in touched_bonus):
            problems.append(f"stage {number} no longer contains its declared change to `{name}`")
    return problems


def _span(units: list[str], wanted, where: str) -> tuple[int, int]:
    """(first, stop) of the one contiguous run of lines whose unit satisfies wanted."""
    found = [i for i, unit in enumerate(units) if wanted(unit)]
    if not found or found[-1] - found[0] + 1 != len(found):
        raise LayoutError(f"{where} must be one contiguous block of lines")
    return found[0], found[-1] + 1


def rebuild(number: int, reference: str, bonus: str) -> str:
    """Bonus stage `number` as the rule makes it from transformer.py and the stage's own parts."""
    reference_doc, reference_lines, _ = split_file(reference, "transformer.py")
    bonus_doc, bonus_lines, demo = split_file(bonus, f"stage {number}")
    if LEGEND not in bonus_doc or LEGEND not in reference_doc:
        raise LayoutError(f"both docstrings need a {LEGEND!r} paragraph")
    docstring = bonus_doc[: bonus_doc.index(LEGEND)] + reference_doc[reference_doc.index(LEGEND) :]
    lines = list(reference_lines)
    reference_units, bonus_units = unit_of_each_line(reference_lines), unit_of_each_line(bonus_lines)
    replacements = []
    for name in DECLARED[number]["changed"]:
        a = _span(reference_units, lambda u, n=name: _within(u, n), f"`{name}` in transformer.py")
        b = _span(bonus_units, lambda u, n=name: _within(u, n), f"`{name}` in stage {number}")
        replacements.append((a, bonus_lines[b[0] : b[1]]))
    for (first, stop), new in sorted(replacements, reverse=True):
        lines[first:stop] = new
    if DECLARED[number]["added"]:
        first, stop = _span(bonus_units, lambda u: _is_added(u, number), f"stage {number}'s added functions")
        if stop != len(bonus_lines):
            raise LayoutError(f"stage {number}'s added functions must come last, right before its demo block")
        lines += bonus_lines[first:stop]
    return docstring + "\n".join(lines) + "\n\n\n" + demo
