"""Live coding (tools/live.py): every check passes on the finished stage, fails on its blank and on at least one
known bug of the piece it checks; the live file keeps the earlier stages whole; the commands answer in one line
when something is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pytest

from debug_pitfalls.registry import PITFALLS
from debug_pitfalls.variants import apply_edits
from stages.manifest import get_stage, import_file
from tests.conftest import ROOT
from tools import live
from tools.checks import BLANK, PASS, run_check

NUMBERS = [s.number for s in live.MAIN_STAGES]


@cache
def checks_of(number: int) -> live.StageChecks:
    return live.stage_checks(number)


@cache
def solution(number: int):
    return live.load_source(live.solution_source(get_stage(number)), f"test_live_solution_{number:02d}")


@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: f"stage{n:02d}")
def test_every_check_passes_on_the_stage_fails_on_its_blank_and_catches_a_known_bug(number):
    found = checks_of(number)
    assert found.checks, f"stage {number} has no check that fails when its pieces are blank"
    for check in found.checks:
        status, message = run_check(check, solution(number))
        assert status == PASS, f"{check.id} fails on the finished stage {number}: {message}"
        assert check.id in found.piece_of, f"{check.id} does not fail on stage {number}'s blanks"
        assert found.caught_by.get(check.id), (
            f"{check.id} catches none of stage {number}'s known bugs: plant one in tools/live.py PLANTED"
        )


@pytest.mark.parametrize("blank", live.BLANKS, ids=lambda b: b.piece)
def test_each_blank_piece_alone_is_missed_by_a_check(blank):
    source = live.solution_source(get_stage(blank.stage))
    module = live.load_source(live.blank_source(source, [blank]), f"test_live_one_{blank.piece.replace('.', '_')}")
    statuses = [run_check(check, module) for check in checks_of(blank.stage).checks]
    assert any(status == BLANK and message.startswith(blank.piece) for status, message in statuses), (
        f"no check of stage {blank.stage} notices that {blank.piece} is blank"
    )


@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: f"stage{n:02d}")
def test_the_live_file_imports_and_keeps_every_earlier_stage_whole(number, tmp_path):
    path, _ = live.write_live(get_stage(number), tmp_path)
    module = import_file(path, f"test_live_file_{number:02d}")
    for earlier in range(1, number):
        for check in checks_of(earlier).checks:
            status, message = run_check(check, module)
            assert status == PASS, f"in the live file of stage {number}, stage {earlier}'s {check.id}: {message}"
    hints = [run_check(check, module)[1] for check in checks_of(number).checks]
    assert all(any(h.startswith(b.piece) for b in live.blanks_of(number)) for h in hints), hints


def test_blanks_keep_the_docstring_and_carry_the_hint():
    source = live.solution_source(get_stage(4))
    blanked = live.blank_source(source, live.blanks_of(4))
    assert "x.transpose(1, 2)" not in blanked, "the solution of split_heads / merge_heads is still in the file"
    assert 'raise NotImplementedError("MultiHeadAttention.split_heads: §3.2.2: (B, L, D) -> (B, H, L, d_k)' in blanked
    assert "def split_heads(self, x: Tensor) -> Tensor:" in blanked and "class MultiHeadAttention" in blanked
    assert '"""§3.2.2: MultiHead(Q, K, V)' in blanked, "the class docstring must stay"


def test_planted_bugs_apply_to_transformer_py_and_do_not_shadow_the_registry():
    names = {p.name for p in PITFALLS}
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    for pitfall in live.PLANTED:
        assert pitfall.name not in names, f"planted bug {pitfall.name} has the name of a registry pitfall"
        assert apply_edits(reference, pitfall) != reference


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_tool(capsys, *args: str) -> Done:
    """tools/live.py's main in this process (torch is imported already), its output captured."""
    try:
        status = live.main(list(args))
    except SystemExit as exit:  # argparse
        status = exit.code
    out, err = capsys.readouterr()
    return Done(status, out, err)


def test_check_names_the_known_bug_and_solution_restores_the_stage(tmp_path, capsys):
    folder = str(tmp_path)
    assert run_tool(capsys, "live", "3", "--dir", folder).returncode == 0
    path = tmp_path / get_stage(3).path.name
    done = run_tool(capsys, "check", "3", "--dir", folder)
    assert done.returncode == 1 and "✗ attention matches pytorch (no mask)" in done.stdout, done.stdout
    assert "not written yet: scaled_dot_product_attention: Eq. (1)" in done.stdout, done.stdout
    assert "✓ embeddings are scaled by sqrt d model" in done.stdout, "the earlier stages must pass"

    bug = next(p for p in PITFALLS if p.name == "missing_scaling")
    path.write_text(apply_edits(get_stage(3).path.read_text(encoding="utf-8"), bug), encoding="utf-8")
    done = run_tool(capsys, "check", "3", "--dir", folder)
    assert done.returncode == 1 and f"looks like a known bug: {bug.title}: {bug.fix}" in done.stdout, done.stdout

    assert run_tool(capsys, "live", "3", "--solution", "--dir", folder).returncode == 0
    assert path.read_text(encoding="utf-8") == get_stage(3).path.read_text(encoding="utf-8")
    assert (tmp_path / (path.name + ".attempt")).read_text(encoding="utf-8") != path.read_text(encoding="utf-8")
    done = run_tool(capsys, "check", "3", "--dir", folder)
    assert done.returncode == 0 and "✗" not in done.stdout and "10 of 10 checks pass" in done.stdout, done.stdout


@pytest.mark.parametrize(
    "args,words",
    [
        (("check", "5"), "does not exist: write it first with make live N=5"),
        (("live", "99"), "no stage '99'"),
        (("live", "13"), "bonus stage"),
        (("check",), "expected a stage number"),
    ],
    ids=["no-live-file", "no-such-stage", "bonus-stage", "no-number"],
)
def test_bad_usage_is_one_line_and_exit_2(args, words, tmp_path, capsys):
    done = run_tool(capsys, *args, "--dir", str(tmp_path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr


def test_a_file_that_does_not_import_is_reported_in_one_line(tmp_path, capsys):
    path, _ = live.write_live(get_stage(1), tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "\ndef broken(:\n", encoding="utf-8")
    done = run_tool(capsys, "check", "1", "--dir", str(tmp_path))
    assert done.returncode == 1 and "does not import" in done.stdout and "SyntaxError" in done.stdout, done.stdout
