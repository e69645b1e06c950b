"""Run behaviour checks on a reader's code and say, one line each, what holds and what does not.

A check is one of the project's own tests (a function of `tf`, the module under test, with its parameters
filled in). It passes, fails with the test's own words, or meets a blank (`NotImplementedError`), whose hint
is then shown. When a failure reads like the failure of a known bug (debug_pitfalls/registry.py, or a bug
planted by tools/live.py), the bug's words follow: what it is and how to fix it.

This file needs nothing but the standard library and rich: tools/notebooks.py copies it into the exercise
notebook, so that a notebook runs its checks with the same code as `make check`.
"""

from __future__ import annotations

import inspect
import linecache
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

PASS, FAIL, BLANK = "pass", "fail", "blank"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Check:
    """One test with its parameters: `function(tf, **kwargs)` raises if the property does not hold."""

    id: str  # the test's name with its parameter id, as pytest names it: test_x[causal]
    function: Callable
    kwargs: dict = field(default_factory=dict)

    @property
    def sentence(self) -> str:
        """The test's name read as a sentence: test_masks_by_hand[causal] -> "masks by hand (causal)"."""
        name, _, params = self.id.partition("[")
        words = name.removeprefix("test_").replace("_", " ")
        return f"{words} ({params.rstrip(']')})" if params else words


def shape_of(message: str) -> str:
    """A failure message with its numbers blotted out, so that "off by 0.31" and "off by 0.27" read alike."""
    return NUMBER.sub("#", message)


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "msg", None) or error).strip()
    if isinstance(error, AssertionError) and text.startswith("assert "):
        text = ""  # pytest's rewriting of an assert without a message: say what a plain run says
    return text.splitlines()[0] if text else type(error).__name__


def failed_statement(error: BaseException, function: Callable) -> str:
    """For an assert without a message: the line of the test that failed, which says what was expected."""
    tb, line = error.__traceback__, ""
    while tb is not None:
        if tb.tb_frame.f_code is function.__code__:
            line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
        tb = tb.tb_next
    return f"failed: {line}" if line else "AssertionError"


def run_check(check: Check, tf) -> tuple[str, str]:
    """(PASS, ""), (FAIL, what the test says) or (BLANK, the hint of the piece not written yet)."""
    takes_tf = "tf" in inspect.signature(check.function).parameters
    try:
        check.function(*([tf] if takes_tf else []), **check.kwargs)
    except NotImplementedError as error:
        return BLANK, first_line(error)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - pytest.fail raises a BaseException; report every failure
        if isinstance(error, AssertionError) or type(error).__name__ == "Failed":
            message = first_line(error)
            return FAIL, message if message != "AssertionError" else failed_statement(error, check.function)
        return FAIL, f"{type(error).__name__}: {first_line(error)}"
    return PASS, ""


def likely_bugs(failures: dict[str, str], known: dict[str, dict[str, str]]) -> list[str]:
    """The known bugs that best explain the failures {check id: shape_of(message)}; known: {the bug's words:
    {check id: shape of the message it gives}}. A bug scores one for each failure it gives in the same words
    and loses one for each check it fails that passes here."""
    scores = {}
    for words, gives in known.items():
        score = sum(failures.get(i) == shape for i, shape in gives.items()) - sum(i not in failures for i in gives)
        if score > 0:
            scores[words] = score
    best = max(scores.values(), default=0)
    return [words for words, score in scores.items() if score == best]


def report(
    checks: list[Check],
    tf,
    known: dict[str, dict[str, str]] | Callable[[], dict[str, dict[str, str]]],
    console: Console | None = None,
    title: str = "",
) -> bool:
    """Run the checks on tf and print one line each; known: see likely_bugs, or a function that computes it,
    called only when a check fails. True when every check passes."""
    console = console or Console()
    if title:
        console.print(Text(title, style="bold"))
    results = [(check, *run_check(check, tf)) for check in checks]
    failures = {check.id: shape_of(message) for check, status, message in results if status == FAIL}
    if callable(known):
        known = known() if failures else {}
    bugs = likely_bugs(failures, known)
    hinted: set[str] = set()
    for check, status, message in results:
        if status == PASS:
            console.print(Text.assemble(("✓ ", "green"), check.sentence))
        elif status == BLANK:
            piece = message.split(":")[0]  # the hint starts with the piece's name: say it in full once only
            said = message if message not in hinted else piece
            hinted.add(message)
            console.print(Text.assemble(("✗ ", "red"), check.sentence, (f": not written yet: {said}", "yellow")))
        else:
            console.print(Text.assemble(("✗ ", "red"), check.sentence, ": ", (message, "red")))
            for words in bugs:
                if known[words].get(check.id) == failures[check.id]:
                    console.print(Text(f"    looks like a known bug: {words}", style="yellow"))
    passed = sum(status == PASS for _, status, _ in results)
    style = "bold green" if passed == len(checks) else "bold red"
    console.print(Text(f"{passed} of {len(checks)} checks pass", style=style))
    return passed == len(checks)


class PytestStandIn:
    """The few parts of pytest that the checks call, for a notebook that has no pytest: approx, fail, skip."""

    class Skipped(Exception):
        pass

    @staticmethod
    def fail(reason: str = "", pytrace: bool = True) -> None:
        raise AssertionError(reason)

    @classmethod
    def skip(cls, reason: str = "") -> None:
        raise cls.Skipped(reason)

    class approx:  # noqa: N801 - named as pytest names it
        def __init__(self, expected: float, rel: float | None = None, abs: float | None = None):
            self.expected = expected
            # pytest's default tolerance: a relative 1e-6, and an absolute 1e-12, whichever is larger
            self.rel = 1e-6 if rel is None and abs is None else (rel or 0.0)
            self.abs = 1e-12 if abs is None else abs

        def __eq__(self, actual: object) -> bool:
            return abs(actual - self.expected) <= max(self.rel * abs(self.expected), self.abs)

        def __repr__(self) -> str:
            return f"{self.expected} ± {max(self.rel * abs(self.expected), self.abs):.1e}"
