"""Run the property tests (tests/test_properties.py) against transformer.py and against each pitfall.

Everything runs in this one process, one pytest session per variant (`pytest.main`), so torch is
imported once. A variant is *caught* when at least one property test that passes on transformer.py
fails on it; which test that is comes from running them, never from the pitfall's `caught_by` hint.
Tests marked `@expensive` (the training run) only run on a variant that no faster test has caught."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .registry import PITFALLS, Pitfall
from .variants import ROOT, build_variant, registered

PROPERTIES = ROOT / "tests" / "test_properties.py"
REFERENCE = "transformer.py"
ENV = "TRANSFORMER_IMPL"  # read by tests/conftest.py: the `tf` fixture loads this pitfall's variant


@dataclass
class Failure:
    test: str  # test function, with its own parameters, e.g. test_attention_matches_pytorch[causal]
    message: str  # the first line of what pytest reported


@dataclass
class Outcome:
    name: str  # a pitfall's name, or "transformer.py"
    failures: list[Failure] = field(default_factory=list)
    passed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str | None = None  # the variant could not be built, or pytest could not run

    @property
    def clean(self) -> bool:
        """Every property test ran and passed (what transformer.py must do)."""
        return self.error is None and not self.failures and self.passed > 0


@dataclass
class Report:
    reference: Outcome | None
    outcomes: list[Outcome]
    seconds: float

    def catching(self, outcome: Outcome) -> list[Failure]:
        """The failures that catch a variant: a test that fails on transformer.py as well proves nothing."""
        if outcome.error is not None:
            return []
        broken = {f.test for f in self.reference.failures} if self.reference is not None else set()
        return [f for f in outcome.failures if f.test not in broken]

    @property
    def uncaught(self) -> list[str]:
        return [o.name for o in self.outcomes if not self.catching(o)]

    @property
    def ok(self) -> bool:
        return (self.reference is None or self.reference.clean) and not self.uncaught


def _label(nodeid: str, impl: str) -> str:
    """tests/test_properties.py::test_x[missing_scaling-causal] -> test_x[causal]: the variant's own id removed."""
    name, _, params = nodeid.rpartition("::")[2].partition("[")
    params = params.removesuffix("]")
    if params == impl:
        params = ""
    elif params.startswith(f"{impl}-"):
        params = params[len(impl) + 1 :]
    elif params.endswith(f"-{impl}"):
        params = params[: -len(impl) - 1]
    return f"{name}[{params}]" if params else name


def _implementation(item: pytest.Item) -> str:
    """The file name of a test's `tf` parameter in a plain run (transformer.py or a stage file); "" under a variant."""
    callspec = getattr(item, "callspec", None)
    tf = callspec.params.get("tf") if callspec is not None else None
    return tf.name if isinstance(tf, Path) else ""


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    text = text.strip().splitlines()[0] if text.strip() else "failed"
    for prefix in ("AssertionError: ", "Failed: "):
        text = text.removeprefix(prefix)
    return text


class _Recorder:
    """A pytest plugin that keeps each test's outcome, and skips expensive tests once something failed."""

    def __init__(self, impl: str, not_proof: frozenset[str]):
        self.impl = impl
        self.not_proof = not_proof  # tests that fail on transformer.py too: their failures catch nothing
        self.outcome = Outcome(impl)
        self.collect_errors: list[str] = []

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """The reference is transformer.py alone: the stage files' runs of stage-marked tests belong to make test."""
        if self.impl != REFERENCE:
            return  # a variant's session holds only that variant (tests/conftest.py)
        deselected = [i for i in items if _implementation(i) not in ("", REFERENCE)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [i for i in items if i not in deselected]

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        caught = any(f.test not in self.not_proof for f in self.outcome.failures)
        if caught and getattr(getattr(item, "function", None), "expensive", False):
            pytest.skip("a faster test already caught this variant")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.outcome.failures.append(Failure(_label(report.nodeid, self.impl), _message(report)))
        elif report.skipped:
            self.outcome.skipped += 1
        elif report.when == "call":
            self.outcome.passed += 1

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(str(report.longrepr).strip().splitlines()[-1])


def run_properties(
    pitfall: Pitfall | None, tb: str = "no", show_output: bool = True, not_proof: frozenset[str] = frozenset()
) -> Outcome:
    """One pytest session of the property tests against a pitfall's variant (None: transformer.py).
    not_proof: tests known to fail on transformer.py, which therefore do not count as catching the bug."""
    impl = pitfall.name if pitfall is not None else REFERENCE
    start = time.perf_counter()
    if pitfall is not None:
        try:
            build_variant(pitfall)  # fail here, clearly, rather than inside every test's fixture
        except Exception as error:  # noqa: BLE001 - any failure to build is reported, not raised
            return Outcome(impl, error=f"could not build the variant: {type(error).__name__}: {error}")
    recorder = _Recorder(impl, not_proof)
    args = [
        str(PROPERTIES),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:unraisableexception",
        f"--tb={tb}",
        "-rN",
        "--no-header",
        f"--rootdir={ROOT}",
    ]
    saved = os.environ.get(ENV)
    if pitfall is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = pitfall.name
    try:
        with contextlib.nullcontext() if show_output else contextlib.redirect_stdout(io.StringIO()):
            status = pytest.main(args, plugins=[recorder])
    finally:
        if saved is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved
    outcome = recorder.outcome
    outcome.seconds = time.perf_counter() - start
    if recorder.collect_errors:
        outcome.error = "the property tests could not be collected: " + "; ".join(recorder.collect_errors)
    elif status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        outcome.error = f"pytest stopped with exit status {int(status)} ({pytest.ExitCode(status).name})"
    return outcome


def run(
    pitfalls: Sequence[Pitfall],
    include_reference: bool = True,
    tb: str = "no",
    show_output: bool = True,
    before: Callable[[Pitfall | None], None] | None = None,
    after: Callable[[Pitfall | None, Outcome], None] | None = None,
) -> Report:
    """Run the property tests on transformer.py (optional) and on each pitfall; before/after follow along.

    A pitfall that is not in PITFALLS (a self-test's) is registered while it runs, so that the
    `tf` fixture can load it by name.
    """
    start = time.perf_counter()
    reference = None
    not_proof: frozenset[str] = frozenset()
    queue: list[Pitfall | None] = ([None] if include_reference else []) + list(pitfalls)
    outcomes = []
    for pitfall in queue:
        if before is not None:
            before(pitfall)
        if pitfall is None:
            outcome = reference = run_properties(None, tb, show_output)
            not_proof = frozenset(f.test for f in reference.failures)
        else:
            with registered(pitfall) if pitfall not in PITFALLS else contextlib.nullcontext():
                outcome = run_properties(pitfall, tb, show_output, not_proof)
            outcomes.append(outcome)
        if after is not None:
            after(pitfall, outcome)
    return Report(reference, outcomes, time.perf_counter() - start)
