"""Presenter mode: step through the stages in the terminal, one idea at a time.

For each stage: its title and the part of the paper it implements, the diff from the stage before it
(syntax-highlighted), then its demo, run live. The stages come from stages/manifest.py; a stage whose
file does not exist is left out.

    make present            # or: .venv/bin/python talk/present.py
    make present N=5        # start at stage 5

Keys: n, space or enter (or the right arrow) go forward: from a stage's diff to its demo, from its demo
to the next stage. s skips the demo, r runs it again, p or b (or the left arrow) go back a stage, q quits.
The live step (tools/live.py), on a main stage: l writes live/NN_name.py, the stage with its new pieces
blank, for you to write in your editor; c checks it (make check N=..); f writes the finished stage there.

Without a terminal (stdin not a tty), or with --no-interactive, every stage from N on is printed at
once and no demo runs unless --run is given; the tests use this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages.layout import split_parts  # noqa: E402
from stages.manifest import STAGES  # noqa: E402
from tools.stages import unified_diff  # noqa: E402

PROG = "talk/present.py"


@dataclass(frozen=True)
class Slide:
    """One stage as presented: the manifest's facts and the file to show and run."""

    number: int
    slug: str
    title: str
    paper: str
    summary: str
    bonus: bool
    path: Path


def manifest_slides() -> list[Slide]:
    """Every stage of the manifest, in its order, whether its file exists or not."""
    return [Slide(s.number, s.slug, s.title, s.paper, s.summary, s.bonus, s.path) for s in STAGES]


def base_of(slide: Slide, slides: Sequence[Slide]) -> Slide | None:
    """What a stage is diffed against: a main stage against the main stage before it, a bonus stage
    against the last main stage (a bonus stage is transformer.py plus one change)."""
    main = [s for s in slides if not s.bonus and s.path.exists()]
    if slide.bonus:
        return main[-1] if main else None
    earlier = [s for s in main if s.number < slide.number]
    return earlier[-1] if earlier else None


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def code_lines(path: Path, full: bool = False) -> tuple[list[str], int]:
    """A stage file's lines without its module docstring and its demo block (unless full), and the
    number of lines cut from the top, so that diff hunks keep the file's own line numbers."""
    text = path.read_text(encoding="utf-8")
    if full:
        return text.splitlines(), 0
    return split_parts(text, display_path(path)).code_lines()


def stage_diff(old: Path, new: Path, full: bool = False, context: int = 3) -> list[str]:
    """A unified diff of two stage files, as lines without newlines: of their code only (the module
    docstring and the demo block left out) unless full. Hunk headers give the files' own line numbers."""
    (a, a_offset), (b, b_offset) = code_lines(old, full), code_lines(new, full)
    return unified_diff(a, b, display_path(old), display_path(new), context, a_offset, b_offset)


def render_stage(console: Console, slide: Slide, slides: Sequence[Slide], full: bool = False) -> None:
    """The stage's header (title, paper reference, what it adds) and the diff of its code from its base
    (of the whole files if full)."""
    n_main = sum(not s.bonus for s in slides)
    which = f"bonus stage {slide.number}" if slide.bonus else f"stage {slide.number} of {n_main}"
    base = base_of(slide, slides)
    header = Text.assemble(
        (f"{slide.title}\n", "bold"),
        (f"{which} · paper: {slide.paper}\n", "cyan"),
        (slide.summary, ""),
    )
    if base is None:
        lines, offset = code_lines(slide.path, full)
        console.print(Panel(header, title=display_path(slide.path), title_align="left", border_style="blue"))
        console.print(Text(f"the first stage: {len(lines)} lines of code", style="italic"))
        console.print(
            Syntax(
                "\n".join(lines),
                "python",
                theme="ansi_dark",
                background_color="default",
                line_numbers=True,
                start_line=offset + 1,
            )
        )
        return
    diff = stage_diff(base.path, slide.path, full)
    added = sum(line.startswith("+") and not line.startswith("+++") for line in diff)
    removed = sum(line.startswith("-") and not line.startswith("---") for line in diff)
    summary = Text.assemble(
        f"{'diff' if full else 'code diff'} from stage {base.number}: ",
        (f"+{added}", "green"),
        " ",
        (f"-{removed}", "red"),
        " lines" + ("" if full else " (docstring and demo left out)"),
    )
    console.print(
        Panel(Group(header, summary), title=display_path(slide.path), title_align="left", border_style="blue")
    )
    if diff:
        console.print(Syntax("\n".join(diff), "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print(Text(f"no difference from {display_path(base.path)}", style="italic"))


def python_for_stages() -> str:
    """The project's virtual environment's python: this one when it runs inside a venv, else .venv's."""
    venv = ROOT / ".venv" / "bin" / "python"
    if sys.prefix == sys.base_prefix and venv.exists():
        return str(venv)
    return sys.executable


def run_demo(console: Console, slide: Slide, live: bool) -> int:
    """Run the stage file as a script. live: its output goes straight to the terminal (progress bars and
    colour stay intact); otherwise it is captured and printed through the console. Returns the exit status."""
    console.rule(f"[bold]demo of stage {slide.number}[/]: python {display_path(slide.path)}")
    command = [python_for_stages(), str(slide.path)]
    try:
        if live:
            status = subprocess.run(command, cwd=ROOT).returncode
        else:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"COLUMNS": "120"}
            )
            console.print(Text(done.stdout + done.stderr))
            status = done.returncode
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted[/]")
        return 130
    if status:
        console.print(f"[red]the demo exited with status {status}[/]")
    return status


# --- keys --------------------------------------------------------------------

FORWARD, BACK, QUIT, SKIP, RERUN = "forward", "back", "quit", "skip", "rerun"
LIVE, CHECK, FINISHED = "live", "check", "finished"  # the live step: blank file, check it, the solution
KEYS = {
    "n": FORWARD,
    " ": FORWARD,
    "\r": FORWARD,
    "\n": FORWARD,
    "\x1b[C": FORWARD,  # right arrow
    "\x1b[B": FORWARD,  # down arrow
    "p": BACK,
    "b": BACK,
    "\x1b[D": BACK,  # left arrow
    "\x1b[A": BACK,  # up arrow
    "q": QUIT,
    "\x03": QUIT,  # ctrl-c
    "\x04": QUIT,  # ctrl-d
    "": QUIT,  # end of input
    "s": SKIP,
    "r": RERUN,
    "l": LIVE,
    "c": CHECK,
    "f": FINISHED,
}


def action_of(key: str) -> str | None:
    """What a key press means, or None for a key that means nothing here."""
    return KEYS.get(key.lower() if len(key) == 1 and key.isalpha() else key)


def read_key() -> str:
    """One key press from the terminal, without waiting for enter; an arrow key comes back as its
    escape sequence ("\\x1b[C")."""
    try:
        import termios
        import tty
    except ImportError:  # Windows
        import msvcrt

        key = msvcrt.getwch()
        if key in ("\x00", "\xe0"):  # an arrow key: a prefix, then its code
            return {"M": "\x1b[C", "K": "\x1b[D", "P": "\x1b[B", "H": "\x1b[A"}.get(msvcrt.getwch(), "")
        return key
    import select

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        key = os.read(fd, 1)
        if key == b"\x1b" and select.select([fd], [], [], 0.05)[0]:
            key += os.read(fd, 2)
        return key.decode(errors="replace")
    except KeyboardInterrupt:
        return "\x03"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# --- the two modes -----------------------------------------------------------


def run_live_step(console: Console, slide: Slide, action: str) -> int:
    """The live step through tools/live.py: write the blank file (LIVE), check it (CHECK), or write the
    finished stage into it (FINISHED). Its output goes straight to the terminal."""
    command = {LIVE: ["live"], CHECK: ["check"], FINISHED: ["live", "--solution"]}[action]
    console.rule(
        f"[bold]live step, stage {slide.number}[/]: make {'check' if action == CHECK else 'live'} N={slide.number}"
    )
    try:
        return subprocess.run(
            [python_for_stages(), str(ROOT / "tools" / "live.py"), command[0], str(slide.number), *command[1:]],
            cwd=ROOT,
        ).returncode
    except KeyboardInterrupt:
        return 130


def present_interactive(
    console: Console,
    slides: Sequence[Slide],
    start: int,
    read: Callable[[], str] = read_key,
    run: Callable[[Console, Slide], int] | None = None,
    full: bool = False,
    live: Callable[[Console, Slide, str], int] = run_live_step,
) -> list[tuple[int, str]]:
    """Step through slides from index start, driven by read(). Returns what happened, in order:
    (stage number, "shown", "demo", or a live step: "live", "check", "finished"), which the tests check."""
    if run is None:

        def run(console: Console, slide: Slide) -> int:
            return run_demo(console, slide, live=True)

    log: list[tuple[int, str]] = []
    index, demo_done = start, False

    def show() -> None:
        console.clear()
        render_stage(console, slides[index], slides, full)
        log.append((slides[index].number, "shown"))

    show()
    while True:
        last = index == len(slides) - 1
        if demo_done:
            nxt = "quit (last stage)" if last else "next stage"
            hint = f"[bold]n/space/enter[/] {nxt} · [bold]r[/] run the demo again · [bold]p/b[/] back · [bold]q[/] quit"
        else:
            hint = "[bold]n/space/enter[/] run the demo · [bold]s[/] skip it · [bold]p/b[/] back · [bold]q[/] quit"
        if not slides[index].bonus:
            hint += " · live: [bold]l[/] blank file, [bold]c[/] check it, [bold]f[/] finished"
        console.print(hint, style="dim")
        action = action_of(read())
        if action == QUIT:
            return log
        if action in (LIVE, CHECK, FINISHED):
            if slides[index].bonus:
                console.print("the live step covers the main stages 1-12", style="dim")
            else:
                live(console, slides[index], action)
                log.append((slides[index].number, action))
            continue
        if action == BACK:
            if index > 0:
                index, demo_done = index - 1, False
                show()
            else:
                console.print("this is the first stage", style="dim")
        elif (action == FORWARD and not demo_done) or action == RERUN:
            run(console, slides[index])
            log.append((slides[index].number, "demo"))
            demo_done = True
        elif action in (FORWARD, SKIP):
            if last:
                console.print("[bold]that was the last stage[/]")
                return log
            index, demo_done = index + 1, False
            show()


def present_all(
    console: Console, slides: Sequence[Slide], start: int, run_demos: bool = False, full: bool = False
) -> int:
    """Print every stage from index start without waiting; run the demos only if asked.
    Returns 0, or 1 if a demo failed."""
    failed = []
    for slide in slides[start:]:
        render_stage(console, slide, slides, full)
        if not slide.bonus:
            console.print(f"live step: make live N={slide.number}, then make check N={slide.number}", style="dim")
        if run_demos and run_demo(console, slide, live=False):
            failed.append(slide.number)
        console.print()
    if failed:
        console.print(f"[red]demos that failed: stages {', '.join(map(str, failed))}[/]")
    return 1 if failed else 0


# --- command line ------------------------------------------------------------


class UsageError(Exception):
    """Bad usage: one line on stderr, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but bad usage costs one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{PROG}: error: {message}\n")


def stage_list(slides: Sequence[Slide]) -> str:
    return ", ".join(f"{s.number} ({s.slug})" for s in slides)


def start_index(number: str | None, slides: Sequence[Slide], existing: Sequence[Slide]) -> int:
    """Where stage `number` sits among the existing stages (the first one when number is None or empty)."""
    if number is None or not number.strip():
        return 0
    try:
        wanted = int(number)
    except ValueError:
        wanted = None
    for i, slide in enumerate(existing):
        if slide.number == wanted:
            return i
    for slide in slides:
        if slide.number == wanted:
            raise UsageError(
                f"stage {wanted}'s file {display_path(slide.path)} does not exist yet; "
                f"the stages with files are {stage_list(existing)}"
            )
    raise UsageError(f"no stage {number!r}; the stages are {stage_list(existing or slides)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description="Step through the stages: title, diff, demo.")
    parser.add_argument("start", nargs="?", metavar="N", help="the stage to start at (default: the first)")
    parser.add_argument(
        "--no-interactive", action="store_true", help="print every stage from N without waiting (default without a tty)"
    )
    parser.add_argument("--run", action="store_true", help="with --no-interactive: run the demos too")
    parser.add_argument("--full", action="store_true", help="diff the whole files, docstrings and demos included")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None, console: Console | None = None, slides: Sequence[Slide] | None = None
) -> int:
    args = parse_args(argv)
    if slides is None:
        slides = manifest_slides()
    existing = [s for s in slides if s.path.exists()]
    try:
        if not existing:
            raise UsageError(f"no stage file exists yet; expected files such as {display_path(slides[0].path)}")
        start = start_index(args.start, slides, existing)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    interactive = not args.no_interactive and sys.stdin.isatty()
    if console is None:
        # rich would cut long diff lines at 80 columns when piped; a wide console keeps them whole
        console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 120)))
    if interactive:
        present_interactive(console, existing, start, full=args.full)
        return 0
    return present_all(console, existing, start, args.run, args.full)


if __name__ == "__main__":
    sys.exit(main())
