"""The numbered stages: list them, run one, diff two, and keep them in step with transformer.py.

The rule that keeps stage N (N < 12) in step with transformer.py, byte for byte:

    stage N = its own module docstring
            + transformer.py from the line after its module docstring up to (not including)
              the dashed header block of section N + 1
            + its own demo block: from the dashed header titled DEMO_TITLE to the end of the file

and stage 12 is transformer.py itself. The shape legend and mask paragraphs of each stage's
docstring are transformer.py's too. `sync` rewrites those derived parts and keeps the rest;
`check` says which stage drifted. Bonus stages (manifest entries with bonus=True) can be
listed, run and diffed, but follow no rule.

    python tools/stages.py list
    python tools/stages.py run 4 [ARGS...]       # ARGS go to the stage, e.g. run 12 --steps 200
    python tools/stages.py diff 3 4             # or: diff 4 (from the stage before)
    python tools/stages.py check | sync | readme
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stages.bonus import sync as bonus_sync  # noqa: E402
from stages.layout import LayoutError, section_start, split_docstring, split_parts  # noqa: E402
from stages.manifest import DEMO_TITLE, STAGES, Stage, get_stage  # noqa: E402, F401 - the tests read DEMO_TITLE here

PROG = "tools/stages.py"
README_START, README_END = "<!-- stages:start -->", "<!-- stages:end -->"
LEGEND = re.compile(r"^Shape legend.*?^Masks:.*?\n(?=\n)", re.M | re.S)  # up to the end of the Masks paragraph
MAIN_STAGES = tuple(s for s in STAGES if not s.bonus)
LAST = max(s.number for s in MAIN_STAGES)


StageError = LayoutError  # transformer.py or a stage file is not laid out the way the rule expects


# --- the rule ----------------------------------------------------------------


def library_part(reference: str, number: int) -> str:
    """transformer.py after its docstring, up to the dashed header block of section number + 1."""
    _, rest = split_docstring(reference, "transformer.py")
    if number == LAST:
        return rest
    return rest[: section_start(rest, number + 1)]


def split_stage(text: str, name: str) -> tuple[str, str, str]:
    """A stage file as (docstring, library part, demo block)."""
    parts = split_parts(text, name, require_demo=True)
    return parts.docstring, parts.code, parts.demo


def with_reference_legend(docstring: str, reference: str, name: str) -> str:
    """The docstring with its shape legend and mask paragraphs replaced by transformer.py's."""
    wanted = LEGEND.search(split_docstring(reference, "transformer.py")[0])
    if wanted is None:
        raise StageError("transformer.py's docstring has no 'Shape legend' ... 'Masks:' paragraphs")
    found = LEGEND.search(docstring)
    if found is None:
        raise StageError(f"{name}'s docstring has no 'Shape legend' ... 'Masks:' paragraphs to keep in step")
    return docstring[: found.start()] + wanted.group() + docstring[found.end() :]


def expected_stage(number: int, text: str, reference: str, name: str = "the stage") -> str:
    """What stage `number` must be, given its current text (for its docstring and demo) and transformer.py."""
    if number == LAST:
        return reference
    docstring, _, demo = split_stage(text, name)
    return with_reference_legend(docstring, reference, name) + library_part(reference, number) + demo


def check_stage(number: int, text: str, reference: str, name: str = "the stage") -> str | None:
    """None when the stage follows the rule, else one sentence saying where it drifted."""
    try:
        expected = expected_stage(number, text, reference, name)
    except StageError as error:
        return str(error)
    if text == expected:
        return None
    found_lines, expected_lines = text.splitlines(keepends=True), expected.splitlines(keepends=True)
    line = next(
        (i for i, (a, b) in enumerate(zip(found_lines, expected_lines, strict=False)) if a != b),
        min(len(found_lines), len(expected_lines)),
    )
    found = found_lines[line].rstrip("\n") if line < len(found_lines) else "<end of file>"
    wanted = expected_lines[line].rstrip("\n") if line < len(expected_lines) else "<end of file>"
    what = "is not byte-for-byte transformer.py" if number == LAST else "drifted from transformer.py"
    return f"stage {number} ({name}) {what} at line {line + 1}: has {found!r}, transformer.py gives {wanted!r}"


# --- files -------------------------------------------------------------------


def stage_file(stage: Stage, root: Path) -> Path:
    return root / stage.path.relative_to(REPO)


def display(stage: Stage, root: Path) -> str:
    path = stage_file(stage, root)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_all(root: Path) -> list[str]:
    """One sentence per main stage that does not follow the rule (empty: all in step)."""
    reference = (root / "transformer.py").read_text(encoding="utf-8")
    problems = []
    for stage in MAIN_STAGES:
        path = stage_file(stage, root)
        if not path.exists():
            problems.append(f"stage {stage.number}: {display(stage, root)} is missing")
            continue
        problem = check_stage(stage.number, path.read_text(encoding="utf-8"), reference, display(stage, root))
        if problem:
            problems.append(problem)
    for number in bonus_sync.DECLARED:
        text = stage_file(get_stage(number), root).read_text(encoding="utf-8")
        try:
            problems += bonus_sync.check_in_step(number, reference, text)
        except bonus_sync.LayoutError as error:
            problems.append(f"stage {number}: {error}")
    return problems


def sync_all(root: Path) -> list[tuple[Stage, str]]:
    """Rewrite the derived parts of every main stage; returns (stage, what happened)."""
    reference = (root / "transformer.py").read_text(encoding="utf-8")
    results = []
    for stage in MAIN_STAGES:
        path = stage_file(stage, root)
        if not path.exists() and stage.number != LAST:
            raise StageError(
                f"{display(stage, root)} is missing: write its docstring and demo block, then sync fills in the rest"
            )
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        expected = expected_stage(stage.number, text, reference, display(stage, root))
        if text == expected:
            results.append((stage, "in step"))
        else:
            path.write_text(expected, encoding="utf-8")
            results.append((stage, "updated"))
    for number in bonus_sync.DECLARED:  # a bonus stage keeps its own declared change (stages/bonus/sync.py)
        stage = get_stage(number)
        path = stage_file(stage, root)
        text = path.read_text(encoding="utf-8")
        new = bonus_sync.rebuild(number, reference, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
        results.append((stage, "updated" if new != text else "in step"))
    return results


def readme_block(stages: tuple[Stage, ...] = STAGES) -> str:
    """The README's stage section, between the markers, generated from the manifest."""
    main = [s for s in stages if not s.bonus]
    first, second = main[2], main[3]
    rows = ["| # | file | title | paper | what it adds |", "|---|---|---|---|---|"]
    for stage in stages:
        file = stage.path.relative_to(REPO).as_posix()
        cells = [
            f"{stage.number} (bonus)" if stage.bonus else str(stage.number),
            f"[`{file}`]({file})",
            stage.title,
            stage.paper,
            stage.summary,
        ]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines = [
        README_START,
        f"The model is built in {len(main)} stages, one component each. Stage N is `transformer.py` up to the end",
        "of its section N, plus a demo that prints something you can check about the new part; the last stage is",
        "`transformer.py` itself.",
        "",
        *rows,
        "",
        "See exactly what a stage adds, either way:",
        "",
        "```sh",
        f"make diff FROM={first.number} TO={second.number}",
        f"git diff --no-index {first.path.relative_to(REPO).as_posix()} {second.path.relative_to(REPO).as_posix()}",
        "```",
        "",
        "`python tools/stages.py check` confirms that every stage still matches `transformer.py`; after editing",
        "`transformer.py`, `python tools/stages.py sync` brings the stages back in step (each keeps its docstring and demo).",
        README_END,
    ]
    return "\n".join(lines)


def with_readme_block(readme: str, block: str) -> str:
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise StageError(f"README.md has no {README_START} ... {README_END} block")
    return readme[:start] + block + readme[end + len(README_END) :]


# --- diff --------------------------------------------------------------------


def unified_diff(
    a: list[str], b: list[str], a_name: str, b_name: str, context: int = 3, a_offset: int = 0, b_offset: int = 0
) -> list[str]:
    """A unified diff (lines without newlines). autojunk off: blank lines must not derail the matching.
    a_offset/b_offset: where a and b start in their files, so hunk headers give the files' line numbers."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    out = []
    for group in matcher.get_grouped_opcodes(context):
        if not out:
            out += [f"--- {a_name}", f"+++ {b_name}"]
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(a_offset + i1, a_offset + i2)} +{_range(b_offset + j1, b_offset + j2)} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + line for line in a[a1:a2]]
                continue
            out += ["-" + line for line in a[a1:a2]]
            out += ["+" + line for line in b[b1:b2]]
    return out


def _range(start: int, stop: int) -> str:
    length = stop - start
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def removed_lines(a: list[str], b: list[str]) -> list[int]:
    """Indices of the lines of a that the diff from a to b removes."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [i for tag, a1, a2, _, _ in matcher.get_opcodes() if tag in ("delete", "replace") for i in range(a1, a2)]


# --- command line ------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse, but bad usage costs one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{PROG}: error: {message}\n")


class UsageError(Exception):
    """Bad usage: one line on stderr, exit status 2."""


def stage_list() -> str:
    return ", ".join(f"{s.number} ({s.slug})" for s in STAGES)


def pick(number: str | None, example: str) -> Stage:
    if number is None or not str(number).strip():
        raise UsageError(f"expected a stage number, e.g. {example}; the stages are {stage_list()}")
    try:
        return get_stage(number)
    except ValueError as error:
        raise UsageError(str(error)) from None


def python_for_stages() -> str:
    """The project's virtual environment's python: this one when it runs inside a venv, else .venv's."""
    venv = REPO / ".venv" / "bin" / "python"
    if sys.prefix == sys.base_prefix and venv.exists():
        return str(venv)
    return sys.executable


def cmd_list(args, console: Console) -> int:
    reference = (args.root / "transformer.py").read_text(encoding="utf-8")
    table = Table(title="stages (make stage N=4, make diff FROM=3 TO=4)")
    for column in ("#", "file", "title", "paper", "what it adds", "status"):
        table.add_column(column, overflow="fold")
    for stage in STAGES:
        path = stage_file(stage, args.root)
        if not path.exists():
            status = "[red]missing[/]"
        elif stage.bonus:
            status = "bonus"
        else:
            problem = check_stage(stage.number, path.read_text(encoding="utf-8"), reference, display(stage, args.root))
            status = "[green]in step[/]" if problem is None else "[red]drifted[/]"
        table.add_row(str(stage.number), path.name, stage.title, stage.paper, stage.summary, status)
    console.print(table)
    return 0


def cmd_run(args, console: Console) -> int:
    stage = pick(args.number, "make stage N=4 or tools/stages.py run 4")
    path = stage_file(stage, args.root)
    if not path.exists():
        raise UsageError(f"stage {stage.number}'s file {display(stage, args.root)} does not exist yet")
    try:
        return subprocess.run([python_for_stages(), str(path), *args.args]).returncode
    except KeyboardInterrupt:
        return 130


def cmd_diff(args, console: Console) -> int:
    example = "make diff FROM=3 TO=4 or tools/stages.py diff 3 4"
    if args.to is None:  # one number given: it is TO, and FROM is the stage before it
        args.to, args.frm = args.frm, None
    new = pick(args.to, example)
    if args.frm is None:
        try:
            old = get_stage(new.number - 1)
        except ValueError:
            raise UsageError(f"stage {new.number} has no stage before it; give both, e.g. {example}") from None
    else:
        old = pick(args.frm, example)
    paths = [stage_file(s, args.root) for s in (old, new)]
    for stage, path in zip((old, new), paths, strict=True):
        if not path.exists():
            raise UsageError(f"stage {stage.number}'s file {display(stage, args.root)} does not exist yet")
    a, b = (p.read_text(encoding="utf-8").splitlines() for p in paths)
    lines = unified_diff(a, b, display(old, args.root), display(new, args.root), args.context)
    if not console.is_terminal:  # piped: a plain patch
        sys.stdout.write("".join(line + "\n" for line in lines))
        return 0
    styles = {"+++": "bold", "---": "bold", "@@": "cyan", "+": "green", "-": "red"}
    for line in lines:
        style = next((s for prefix, s in styles.items() if line.startswith(prefix)), "")
        console.print(Text(line, style=style), soft_wrap=True)
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    console.print(f"[bold]stage {old.number} → {new.number}:[/] [green]+{added}[/] [red]-{removed}[/] lines")
    return 0


def cmd_check(args, console: Console) -> int:
    problems = check_all(args.root)
    for problem in problems:
        print(f"{PROG}: {problem}; run `python {PROG} sync`", file=sys.stderr)
    if not problems:
        console.print(f"[green]all {len(MAIN_STAGES)} stages and the bonus stages are in step with transformer.py[/]")
    return 1 if problems else 0


def cmd_sync(args, console: Console) -> int:
    results = sync_all(args.root)
    table = Table(title="stages synced from transformer.py")
    table.add_column("#")
    table.add_column("file")
    table.add_column("")
    for stage, status in results:
        table.add_row(str(stage.number), stage_file(stage, args.root).name, status)
    console.print(table)
    return 0


def cmd_readme(args, console: Console) -> int:
    path = args.root / "README.md"
    text = path.read_text(encoding="utf-8")
    new = with_readme_block(text, readme_block())
    if new != text:
        path.write_text(new, encoding="utf-8")
    console.print(f"README.md stages block {'rewritten' if new != text else 'already up to date'}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description="List, run, diff and keep in step the numbered stages.")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository to work on (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="table of the stages").set_defaults(func=cmd_list)
    run = commands.add_parser("run", help="run stage N's demo: run N [ARGS...]")
    run.add_argument("number", nargs="?", help="the stage number")
    run.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the stage")
    run.set_defaults(func=cmd_run)
    diff = commands.add_parser("diff", help="unified diff of two stages: diff FROM TO, or diff TO")
    diff.add_argument("frm", nargs="?", metavar="FROM")
    diff.add_argument("to", nargs="?", metavar="TO")
    diff.add_argument("-U", "--context", type=int, default=3, help="lines of context (default: 3)")
    diff.set_defaults(func=cmd_diff)
    commands.add_parser("check", help="exit 1 if a stage drifted from transformer.py").set_defaults(func=cmd_check)
    commands.add_parser("sync", help="rewrite the transformer.py part of every stage").set_defaults(func=cmd_sync)
    commands.add_parser("readme", help="rewrite the README's stages block").set_defaults(func=cmd_readme)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.root = args.root.resolve()
    # rich would wrap long diff and table lines at 80 columns when piped; a wide console keeps them whole
    console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160)))
    try:
        return args.func(args, console)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # piped into `head`, say: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (StageError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
