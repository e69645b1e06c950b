"""The presenter (talk/present.py): it renders every stage of the manifest without waiting, shows each stage's
title, paper reference and the diff of its code, steps forward and back on the right keys, and refuses a bad
stage number in one line with exit status 2."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import ROOT, load_module

present = load_module(ROOT / "talk" / "present.py")
EXISTING = [s for s in present.manifest_slides() if s.path.exists()]


def recording_console() -> Console:
    return Console(record=True, width=140, file=io.StringIO(), color_system=None)


@pytest.fixture(scope="module")
def rendered() -> str:
    """Every existing stage, rendered once in non-interactive mode."""
    console = recording_console()
    status = present.main(["--no-interactive"], console=console)
    assert status == 0, f"the presenter exited with status {status}"
    return console.export_text()


def panels(text: str) -> list[str]:
    """The rendered text cut into one piece per stage (each starts with its panel's top border)."""
    pieces = text.split("╭─ ")[1:]
    return ["╭─ " + piece for piece in pieces]


def test_every_existing_stage_is_rendered_in_order(rendered):
    assert EXISTING, "no stage file exists, so there is nothing to present"
    shown = [piece.split()[1] for piece in panels(rendered)]  # the file name in each panel's title
    assert shown == [present.display_path(s.path) for s in EXISTING], f"stages shown: {shown}"


@pytest.mark.parametrize("slide", EXISTING, ids=[f"stage{s.number:02d}" for s in EXISTING])
def test_stage_shows_title_paper_and_its_code_diff(rendered, slide):
    piece = next(p for p in panels(rendered) if p.split()[1] == present.display_path(slide.path))
    flat = " ".join(piece.split())  # the panel may wrap long lines
    assert slide.title in flat, f"stage {slide.number}'s title {slide.title!r} is not shown"
    assert f"paper: {slide.paper}" in flat, f"stage {slide.number}'s paper reference {slide.paper!r} is not shown"
    base = present.base_of(slide, EXISTING)
    if base is None:
        assert "lines of code" in piece, "the first stage should show its code"
        return
    assert f"--- {present.display_path(base.path)}" in piece, f"no diff header from stage {base.number}"
    assert f"+++ {present.display_path(slide.path)}" in piece, "no diff header for the stage itself"
    if not slide.bonus and slide.number > 1:
        # every main stage adds its own section to transformer.py, with its header
        assert f"+# Stage {slide.number} · {slide.title}" in piece, (
            f"the diff does not add stage {slide.number}'s section"
        )
    assert "+# Demo of this stage" not in piece, "the code diff should leave the demo block out"


def test_start_at_stage_n_skips_the_earlier_ones():
    later = [s for s in EXISTING if not s.bonus and s.number >= 5]
    if not later:
        pytest.skip("stage 5 has no file yet")
    console = recording_console()
    assert present.main(["5", "--no-interactive"], console=console) == 0
    shown = [piece.split()[1] for piece in panels(console.export_text())]
    assert shown[0] == present.display_path(later[0].path), f"started at {shown[0]}, not at stage 5"
    assert len(shown) == len([s for s in EXISTING if EXISTING.index(s) >= EXISTING.index(later[0])])


def test_bad_stage_number_exits_2_with_one_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "talk" / "present.py"), "99", "--no-interactive"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, f"expected exit status 2 for stage 99, got {done.returncode}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
    assert "no stage '99'" in lines[0] and "1 (embeddings)" in lines[0], f"the line should list the stages: {lines[0]}"
    assert done.stdout == "", "nothing should be rendered for a bad stage number"


# --- with stages of our own, to check the diff and the keys exactly --------------------------------

DASHED = "# " + "-" * 77
DEMO = f"{DASHED}\n# Demo of this stage (not part of transformer.py)\n{DASHED}\n"


def fake_stages(tmp_path: Path, demo_status: int = 0) -> list:
    """Three small main stages and one bonus stage, each with a docstring, code and a demo block."""
    code = ["x = 1\n", "x = 1\ny = 2\n", "x = 1\ny = 2\nz = 3\n", "x = 1\ny = 20\n"]
    slides = []
    for number, body in enumerate(code, start=1):
        path = tmp_path / f"{number:02d}_s{number}.py"
        demo = f'print("demo of stage {number}")\nraise SystemExit({demo_status})\n'
        path.write_text(f'"""Stage {number}.\n\nIt adds one line.\n"""\n\n{body}\n\n{DEMO}{demo}', encoding="utf-8")
        bonus = number == 4
        slides.append(present.Slide(number, f"s{number}", f"Title {number}", f"§{number}", "adds", bonus, path))
    return slides


def test_code_diff_leaves_out_docstring_and_demo_and_keeps_line_numbers(tmp_path):
    slides = fake_stages(tmp_path)
    diff = present.stage_diff(slides[0].path, slides[1].path)
    assert diff[2:] == ["@@ -6 +6,2 @@", " x = 1", "+y = 2"], f"unexpected code diff: {diff}"
    full = present.stage_diff(slides[0].path, slides[1].path, full=True)
    assert '-"""Stage 1.' in full and '+print("demo of stage 2")' in full, "--full should diff the whole files"


def test_bonus_stage_is_diffed_against_the_last_main_stage(tmp_path):
    slides = fake_stages(tmp_path)
    assert present.base_of(slides[3], slides) is slides[2]
    assert present.base_of(slides[2], slides) is slides[1]
    assert present.base_of(slides[0], slides) is None
    diff = present.stage_diff(slides[2].path, slides[3].path)
    assert "-y = 2" in diff and "+y = 20" in diff and "-z = 3" in diff, f"unexpected bonus diff: {diff}"


def test_keys_step_through_stages_and_demos(tmp_path):
    slides = fake_stages(tmp_path)
    keys = iter(["\r", "n", "x", "s", "b", "\x1b[C", "r", "p", "p", "q", "n"])
    ran = []
    log = present.present_interactive(
        recording_console(), slides, 0, read=lambda: next(keys), run=lambda console, slide: ran.append(slide.number)
    )
    assert log == [
        (1, "shown"),
        (1, "demo"),  # enter: run the demo
        (2, "shown"),  # n: next stage; x: ignored
        (3, "shown"),  # s: skip the demo
        (2, "shown"),  # b: back
        (2, "demo"),  # right arrow: run the demo
        (2, "demo"),  # r: run it again
        (1, "shown"),  # p: back
    ], f"unexpected sequence: {log}"  # p on the first stage stays put; q quits before the last "n"
    assert ran == [1, 2, 2]
    assert next(keys) == "n", "the presenter read past q"


def test_forward_after_the_last_demo_ends(tmp_path):
    slides = fake_stages(tmp_path)
    keys = iter([" ", " "])
    log = present.present_interactive(recording_console(), slides, 3, read=lambda: next(keys), run=lambda c, s: 0)
    assert log == [(4, "shown"), (4, "demo")]


def test_run_shows_demo_output_and_reports_failures(tmp_path):
    console = recording_console()
    slides = fake_stages(tmp_path)[:2]
    assert present.main(["--no-interactive", "--run"], console=console, slides=slides) == 0
    text = console.export_text()
    assert "demo of stage 1" in text and "demo of stage 2" in text, "the demos' output is not shown"
    (tmp_path / "failing").mkdir()
    failing = fake_stages(tmp_path / "failing", demo_status=3)
    console = recording_console()
    assert present.main(["2", "--no-interactive", "--run"], console=console, slides=failing) == 1
    assert "exited with status 3" in console.export_text(), "a failing demo is not reported"


def test_stage_without_a_file_is_refused_in_one_line(tmp_path, capsys):
    slides = fake_stages(tmp_path)
    slides[1].path.unlink()
    assert present.main(["2", "--no-interactive"], slides=slides) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist yet" in err[0] and "1 (s1), 3 (s3)" in err[0], f"{err}"
    assert present.main(["abc"], slides=slides) == 2
    assert "no stage 'abc'" in capsys.readouterr().err


def test_keys_map_to_actions():
    assert {present.action_of(k) for k in ("n", " ", "\r", "\n", "N", "\x1b[C")} == {present.FORWARD}
    assert {present.action_of(k) for k in ("p", "b", "B", "\x1b[D")} == {present.BACK}
    assert {present.action_of(k) for k in ("q", "Q", "\x03", "")} == {present.QUIT}
    assert present.action_of("z") is None


def test_live_keys_write_check_and_finish_on_main_stages_only(tmp_path):
    slides = fake_stages(tmp_path)
    keys = iter(["l", "c", "f", "n", "n", "n", "l", "q"])
    steps = []
    log = present.present_interactive(
        recording_console(),
        slides,
        2,
        read=lambda: next(keys),
        run=lambda console, slide: 0,
        live=lambda console, slide, action: steps.append((slide.number, action)),
    )
    assert steps == [(3, present.LIVE), (3, present.CHECK), (3, present.FINISHED)], f"live steps: {steps}"
    expected = [(3, "shown"), (3, "live"), (3, "check"), (3, "finished"), (3, "demo"), (4, "shown"), (4, "demo")]
    assert log == expected, f"unexpected sequence: {log} (the bonus stage 4 has no live step)"


def test_live_step_runs_tools_live_py_for_the_stage(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        present.subprocess, "run", lambda command, cwd: calls.append(command) or subprocess.CompletedProcess(command, 0)
    )
    slide = fake_stages(tmp_path)[1]
    for action in (present.LIVE, present.CHECK, present.FINISHED):
        assert present.run_live_step(recording_console(), slide, action) == 0
    tool = str(ROOT / "tools" / "live.py")
    assert [c[1:] for c in calls] == [[tool, "live", "2"], [tool, "check", "2"], [tool, "live", "2", "--solution"]]


def test_every_main_stage_names_its_live_step(rendered):
    for slide in EXISTING:
        line = f"live step: make live N={slide.number}, then make check N={slide.number}"
        assert (line in rendered) != slide.bonus, f"stage {slide.number}: the live step line is wrong"
