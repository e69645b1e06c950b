"""Command line: python -m debug_pitfalls {list, diff NAME, test [NAME], readme [--check]}.

The Makefile's front doors: `make pitfall NAME=...` (diff, or list without NAME), `make test-bugs`
(test) and `make pitfall-readme` (readme).
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .registry import PITFALLS, Pitfall
from .variants import PitfallDriftError, find_pitfall, variant_diff

PROG = "debug_pitfalls"


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage costs one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _lookup(name: str) -> Pitfall | None:
    try:
        return find_pitfall(name)
    except ValueError:
        return None


def _unknown(name: str) -> int:
    return _usage_error(f"no pitfall {name!r}; the pitfalls are {', '.join(p.name for p in PITFALLS)}")


# --- list and diff ---------------------------------------------------------------------------


def show_list(console: Console) -> int:
    table = Table(title=f"{len(PITFALLS)} pitfalls: make pitfall NAME=<name> shows one")
    table.add_column("name", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("the bug", overflow="fold")
    for p in PITFALLS:
        table.add_row(p.name, _kind(p), p.title)
    console.print(table)
    return 0


def _kind(pitfall: Pitfall) -> Text:
    return Text("loud", style="yellow") if pitfall.loud else Text("silent", style="magenta")


def show_diff(console: Console, name: str) -> int:
    pitfall = _lookup(name)
    if pitfall is None:
        return _unknown(name)
    try:
        diff = variant_diff(name)
    except PitfallDriftError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    console.print(Text.assemble((pitfall.title, "bold"), " · ", _kind(pitfall), " · ", pitfall.paper))
    about = Table.grid(padding=(0, 2))
    about.add_column(style="bold", no_wrap=True)
    about.add_column()
    for label, text in (("bug", pitfall.bug), ("symptom", pitfall.symptom), ("fix", pitfall.fix)):
        about.add_row(label, text)
    console.print(about)
    console.print()
    styles = {"+": "green", "-": "red", "@": "cyan"}
    for line in diff.splitlines():
        style = "bold" if line.startswith(("+++", "---")) else styles.get(line[:1], "")
        console.print(Text(line, style=style), soft_wrap=True)
    return 0


# --- test ------------------------------------------------------------------------------------


def _group(failures) -> list[tuple[list[str], str]]:
    """Failures with the same message together, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for failure in failures:
        groups.setdefault(failure.message, []).append(failure.test)
    return [(tests, message) for message, tests in groups.items()]


def _print_failures(console: Console, outcome) -> None:
    if outcome.error:
        console.print(Text(f"  ! {outcome.error}", style="bold red"))
    for tests, message in _group(outcome.failures):
        more = f" (and {len(tests) - 1} more)" if len(tests) > 1 else ""
        console.print(Text.assemble("  ✗ ", (tests[0], "bold"), more, ": ", (message, "red")))


def _caught_by(pitfall: Pitfall, failures) -> str:
    """The failing test to show: the hint if it really failed, else the first that did."""
    names = [f.test.partition("[")[0] for f in failures]
    shown = pitfall.caught_by if pitfall.caught_by in names else names[0]
    others = len(set(names)) - 1
    return shown + (f" (+{others} more)" if others else "")


def run_tests(console: Console, name: str | None) -> int:
    from . import harness  # imports pytest; list and diff stay fast without it

    if name:
        pitfall = _lookup(name)
        if pitfall is None:
            return _unknown(name)
        pitfalls, tb = [pitfall], "short"
    else:
        pitfalls, tb = list(PITFALLS), "no"

    def before(p: Pitfall | None) -> None:
        if p is None:
            console.rule(f"[bold]{harness.REFERENCE}[/] · must pass every property test", align="left")
        else:
            console.rule(Text.assemble((p.name, "bold"), " · ", _kind(p), " · ", p.title), align="left")
        sys.stdout.flush()

    def after(p: Pitfall | None, outcome) -> None:
        sys.stdout.flush()
        if tb == "no" or outcome.error:  # with tracebacks on, pytest has just shown each failure in full
            _print_failures(console, outcome)

    report = harness.run(pitfalls, include_reference=True, tb=tb, before=before, after=after)

    table = Table(title="Which test catches which bug")
    table.add_column("pitfall", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("caught by", overflow="fold")
    table.add_column("symptom", overflow="fold")
    for pitfall, outcome in zip(pitfalls, report.outcomes, strict=True):
        catching = report.catching(outcome)
        if catching:
            caught = Text(_caught_by(pitfall, catching), style="green")
        else:
            caught = Text("NOT CAUGHT" + (f" ({outcome.error})" if outcome.error else ""), style="bold red")
        table.add_row(pitfall.name, _kind(pitfall), caught, pitfall.symptom)
    console.print(table)

    reference = report.reference
    if reference.clean:
        console.print(f"[green]transformer.py passes all {reference.passed} property tests[/]")
    else:
        what = reference.error or ", ".join(f.test for f in reference.failures)
        console.print(f"[bold red]transformer.py fails the property tests: {what}[/]")
    console.print(
        f"{len(pitfalls)} variant{'s' if len(pitfalls) > 1 else ''} and transformer.py tested "
        f"in {report.seconds:.1f} s ({time.perf_counter() - _START:.1f} s with start-up)"
    )
    caught = len(pitfalls) - len(report.uncaught)
    last = f"{caught}/{len(pitfalls)} pitfalls caught"
    if report.uncaught:
        last += f"; NOT caught: {', '.join(report.uncaught)}"
    if not reference.clean:
        last += "; and transformer.py itself fails, so fix it first"
    console.print(Text(last, style="bold green" if report.ok else "bold red"))
    return 0 if report.ok else 1


# --- readme ----------------------------------------------------------------------------------


def readme(console: Console, check: bool) -> int:
    from .readme import README, current_block, render, update

    text = README.read_text(encoding="utf-8")
    try:
        in_step = current_block(text) == render()
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    if check:
        if not in_step:
            print(
                f"{PROG}: error: the README's pitfall section is out of date; run make pitfall-readme", file=sys.stderr
            )
            return 1
        console.print("README pitfall section is up to date")
        return 0
    if not in_step:
        README.write_text(update(text), encoding="utf-8")
    console.print(f"README pitfall section {'already up to date' if in_step else 'updated'} ({len(PITFALLS)} pitfalls)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="Deliberately broken transformers and the tests that catch them.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the pitfalls")
    diff = commands.add_parser("diff", help="show one pitfall as a diff against transformer.py (no NAME: list them)")
    diff.add_argument("name", nargs="?", default="")
    test = commands.add_parser("test", help="run the property tests against every pitfall, or one")
    test.add_argument("name", nargs="?", default="")
    text = commands.add_parser("readme", help="regenerate the README's pitfall section")
    text.add_argument("--check", action="store_true", help="only check that it is up to date")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    if args.command == "list" or (args.command == "diff" and not args.name):
        return show_list(console)
    if args.command == "diff":
        return show_diff(console, args.name)
    if args.command == "test":
        return run_tests(console, args.name or None)
    return readme(console, args.check)


_START = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main())
