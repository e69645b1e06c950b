"""The pitfall machinery: every variant builds from the current transformer.py, every one is caught by a
property test (tests/test_properties.py, which transformer.py itself must pass), and a variant turned back
into correct code is reported as uncaught, which shows the harness judges behaviour, not names."""

from __future__ import annotations

import dataclasses

import pytest

from debug_pitfalls import (
    PITFALLS,
    Edit,
    Pitfall,
    PitfallDriftError,
    build_variant,
    harness,
    load_variant,
    variant_diff,
)
from debug_pitfalls.__main__ import main
from debug_pitfalls.readme import README, current_block, render
from debug_pitfalls.variants import TRANSFORMER_PATH
from tests.conftest import load_module

NAMES = [p.name for p in PITFALLS]

# view_after_transpose with its own fix applied: different text, correct behaviour
REVERTED = dataclasses.replace(
    next(p for p in PITFALLS if p.name == "view_after_transpose"),
    name="view_after_transpose_fixed",
    edits=(
        Edit(
            "return x.reshape(B, L, self.n_heads * self.d_k)",
            "return x.contiguous().view(B, L, self.n_heads * self.d_k)",
        ),
    ),
)


@pytest.fixture(scope="module")
def report() -> harness.Report:
    """One in-process harness run over every pitfall and the reverted variant (the slow part). That
    transformer.py passes every property test is checked by tests/test_properties.py itself, in the same suite."""
    return harness.run([*PITFALLS, REVERTED], include_reference=False, show_output=False)


def outcome_of(report: harness.Report, name: str) -> harness.Outcome:
    return next(o for o in report.outcomes if o.name == name)


@pytest.mark.parametrize("name", NAMES)
def test_every_pitfall_is_caught(report, name):
    outcome = outcome_of(report, name)
    assert outcome.error is None, f"pitfall {name} could not be tested: {outcome.error}"
    assert report.catching(outcome), (
        f"pitfall {name} was not caught: all {outcome.passed} property tests pass on it; "
        f"add a test to tests/test_properties.py that its bug fails"
    )


def test_a_variant_turned_back_into_correct_code_is_reported_uncaught(report):
    outcome = outcome_of(report, REVERTED.name)
    assert outcome.error is None, f"the reverted variant could not be tested: {outcome.error}"
    assert not report.catching(outcome), "a variant whose bug was fixed was still reported as caught, by " + ", ".join(
        f.test for f in outcome.failures
    )
    assert REVERTED.name in report.uncaught and not report.ok, "the report must name the uncaught variant and fail"


# --- building the variants -----------------------------------------------------------------


def public_names(module) -> set[str]:
    return {name for name in vars(module) if not name.startswith("_")}


@pytest.fixture(scope="module")
def original():
    return load_module(TRANSFORMER_PATH)


@pytest.mark.parametrize("name", NAMES)
def test_variant_has_the_public_api_of_transformer(original, name):
    variant = load_variant(name)
    missing = public_names(original) - public_names(variant)
    assert not missing, f"the variant {name} lacks {sorted(missing)}"
    assert variant is not original and variant.Transformer is not original.Transformer


@pytest.mark.parametrize("name", NAMES)
def test_variant_diff_is_a_few_lines(name):
    diff = variant_diff(name)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert 1 <= len(changed) <= 6, f"the diff of {name} changes {len(changed)} lines; a pitfall is a few-line bug"


def make_pitfall(*edits: Edit) -> Pitfall:
    return Pitfall(name="scratch", title="Scratch", loud=False, bug="b", symptom="s", paper="p", fix="f", edits=edits)


def test_a_snippet_missing_from_transformer_is_an_error():
    with pytest.raises(PitfallDriftError, match="scratch: snippet 1 of 1 no longer occurs in transformer.py"):
        build_variant(make_pitfall(Edit("this text is not in transformer.py", "x")))


def test_a_snippet_found_twice_is_an_error():
    with pytest.raises(PitfallDriftError, match=r"scratch: snippet 2 of 2 occurs \d+ times"):
        build_variant(make_pitfall(Edit("math.sqrt(d_k)", "math.sqrt(d_k)"), Edit("self.", "self.")))


def test_an_unknown_name_lists_the_pitfalls():
    with pytest.raises(ValueError, match="no pitfall 'nope'; the pitfalls are causal_mask_off_by_one, "):
        load_variant("nope")


def test_the_manifest_is_complete():
    assert len(PITFALLS) >= 10, f"only {len(PITFALLS)} pitfalls; the talk promises at least 10"
    assert len(set(NAMES)) == len(NAMES), "two pitfalls share a name"
    assert any(p.loud for p in PITFALLS) and not all(p.loud for p in PITFALLS), "show loud and silent bugs"
    with pytest.raises(ValueError, match="fix must be one non-empty line"):
        dataclasses.replace(PITFALLS[0], fix="")


# --- the command line and the README -------------------------------------------------------


def test_pitfall_command_prints_the_diff(capsys):
    assert main(["diff", "missing_scaling"]) == 0
    out = capsys.readouterr().out
    assert "\n-    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)  #" in out
    assert "\n+    scores = query @ key.transpose(-2, -1)  #" in out


def exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse exits on its own errors
        return exit.code


@pytest.mark.parametrize("argv", [["diff", "nope"], ["test", "nope"], ["frobnicate"]], ids=" ".join)
def test_bad_usage_is_one_line_and_status_2(capsys, argv):
    status = exit_status(argv)
    err = capsys.readouterr().err
    assert status == 2, f"{' '.join(argv)} exited with status {status}, not 2 (bad usage)"
    assert len(err.strip().splitlines()) == 1, f"expected one line on stderr, got: {err!r}"


def test_list_names_every_pitfall(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    missing = [name for name in NAMES if name not in out]
    assert not missing, f"the list leaves out {missing}"


def test_readme_lists_the_pitfalls_of_the_manifest():
    block = current_block(README.read_text(encoding="utf-8"))
    assert block == render(), "the README's pitfall section is out of date: run make pitfall-readme"
    for p in PITFALLS:
        assert f"`make pitfall NAME={p.name}`" in block
