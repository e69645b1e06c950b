"""The notebooks (tools/notebooks.py): their code cells are their sources, and they run where nothing of the
repository is: the full walk end to end, trained to >= 99% exact match; the exercises as shipped (every check
names the missing piece, no cell fails) and with the solutions filled in (every check passes). The checks a
notebook carries pass on the finished code and fail on the known bugs of their piece, with those bugs' words."""

from __future__ import annotations

import linecache
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import nbformat
import pytest

from debug_pitfalls.variants import apply_edits
from stages.manifest import get_stage
from tools import live
from tools import notebooks as nbs

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROBE = """import importlib.util, os
print("repository visible:", importlib.util.find_spec("transformer") is not None or os.path.exists("transformer.py"))"""


def text_of(cell) -> str:
    """Everything a code cell printed or displayed, as plain text."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return ANSI.sub("", "".join(parts))


def errors_of(nb) -> list[str]:
    return [
        f"{cell.get('id')}: {o.get('ename')}: {o.get('evalue')}"
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.fixture(scope="module")
def executed() -> dict[str, tuple[nbformat.NotebookNode, float]]:
    """The three runs, side by side (each in its own kernel: the two cores take turns, not one after the
    other), each with a last cell that asks whether it can see the repository."""
    shipped = nbformat.read(nbs.EXERCISES_PATH, as_version=4)
    runs = {
        "full": nbformat.read(nbs.FULL, as_version=4),
        "exercises": shipped,
        "solved": nbs.with_solutions(shipped),
    }
    for nb in runs.values():
        nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="probe"))

    def run(nb):
        start = time.perf_counter()
        done = nbs.execute(nb, timeout=300)
        return done, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {name: pool.submit(run, nb) for name, nb in runs.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, (_, seconds) in results.items():
        print(f"notebook run '{name}': {seconds:.1f} s (2-core VM, runs side by side)", file=sys.stderr)
    return results


def test_code_cells_are_their_sources():
    problems = nbs.check_all()
    assert not problems, "\n".join(problems)


def test_a_drifted_cell_is_named_with_its_source_and_the_command():
    generated = nbs.full_notebook()
    committed = nbformat.from_dict(nbformat.v4.upgrade(generated))
    cell = next(c for c in committed.cells if c.get("id") == "stage-04-code")
    cell.source = cell.source.replace("x.transpose(1, 2)", "x.transpose(2, 1)", 1)
    problems = nbs.drifted(committed, generated, "notebooks/x.ipynb")
    assert len(problems) == 1, problems
    assert "stage-04-code" in problems[0] and "transformer.py, stage 4" in problems[0], problems[0]
    assert "x.transpose(2, 1)" in problems[0] and "`make notebooks`" in problems[0], problems[0]


def test_the_full_notebook_is_the_twelve_stages_in_order_from_transformer_py():
    nb = nbs.full_notebook()
    _, preamble, by_stage = nbs.walk()
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[0] == preamble and "class TransformerConfig" in preamble
    positions = [code.index(by_stage[n]) for n in nbs.NUMBERS]
    assert positions == sorted(positions), "the stages must come in order"
    for number in nbs.NUMBERS[:-1]:
        assert code[positions[number - 1] + 1] == nbs.demo_code(number), f"stage {number}'s demo must follow its code"
    titles = [
        c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Stage")
    ]
    assert titles == [f"## Stage {n} · {get_stage(n).title}" for n in nbs.NUMBERS]


def test_the_full_notebook_runs_alone_and_trains_to_99_percent(executed):
    nb, _ = executed["full"]
    assert not errors_of(nb), errors_of(nb)
    assert "repository visible: False" in text_of(nb.cells[-1]), "the run could see the repository's files"
    for cell in nb.cells:
        if cell.get("id", "").endswith("-demo"):
            assert text_of(cell).strip(), f"{cell.id} printed nothing"
    training = text_of(next(c for c in nb.cells if c.get("id") == "demo-training"))
    match = re.search(r"exact match on held-out sequences: ([\d.]+)%", training)
    assert match and float(match.group(1)) >= 99.0, f"the demo training did not reach 99%: {training[-300:]}"
    figure = next(c for c in nb.cells if c.get("id") == "demo-figure")
    assert any("image/png" in o.get("data", {}) for o in figure.outputs), "the attention figure is not shown inline"


def check_outputs(nb) -> dict[str, str]:
    return {c.id: text_of(c) for c in nb.cells if c.get("id", "").endswith("-check")}


def test_the_exercises_as_shipped_name_every_missing_piece_and_nothing_fails(executed):
    nb, _ = executed["exercises"]
    assert not errors_of(nb), f"a cell failed in the shipped exercise notebook: {errors_of(nb)}"
    assert "repository visible: False" in text_of(nb.cells[-1])
    outputs = check_outputs(nb)
    assert len(outputs) == len(nbs.EXERCISES)
    for exercise, (cell_id, text) in zip(nbs.EXERCISES, outputs.items(), strict=True):
        lines = [line for line in text.splitlines() if line.startswith(("✓", "✗"))]
        assert lines and not [line for line in lines if line.startswith("✓")], f"{cell_id}: a check passed on a blank"
        assert all("not written yet: " in line for line in lines), f"{cell_id}: {text}"
        assert any(piece in text for piece in exercise.pieces), f"{cell_id} does not name {exercise.pieces}"
        assert re.search(rf"0 of {len(lines)} checks pass", text), text


def test_the_exercises_with_the_solutions_pass_every_check(executed):
    nb, _ = executed["solved"]
    assert not errors_of(nb), errors_of(nb)
    for cell_id, text in check_outputs(nb).items():
        counted = re.search(r"(\d+) of (\d+) checks pass", text)
        assert counted and counted.group(1) == counted.group(2) != "0", f"{cell_id}: {text}"
        assert "✗" not in text, f"{cell_id}: {text}"


# --- the notebook's checks, run here on its own cells: the finished code, and each known bug -----------


def run_cells(cells: list[str], name: str) -> ModuleType:
    """Execute notebook code cells in order in a fresh module, as a kernel would."""
    module = ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        for i, source in enumerate(cells):
            filename = f"<{name} cell {i}>"
            linecache.cache[filename] = (
                len(source),
                None,
                source.splitlines(keepends=True),
                filename,
            )  # as IPython does
            exec(compile(source, filename, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("exercise", nbs.EXERCISES, ids=lambda e: e.pieces[0])
def test_each_notebook_check_passes_on_the_solution_and_catches_a_known_bug(exercise, capsys):
    solved = nbs.with_solutions(nbformat.read(nbs.EXERCISES_PATH, as_version=4))
    cells = [c for c in solved.cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(cells) if c.metadata.get("exercise") == exercise.title)
    upto = [c.source for c in cells[: at + 1]]
    notebook = run_cells(upto, "notebook_solved")
    checks = notebook.CHECKS[exercise.title]
    terminal = {c.id for c in live.stage_checks(exercise.stage, with_known=False).checks}
    assert checks and {c.id for c in checks} <= terminal, "the notebook's checks must be make check's"
    tf = notebook.ThisNotebook()
    for check in checks:
        status, message = notebook.run_check(check, tf)
        assert status == notebook.PASS, f"{check.id} fails on the solution in the notebook: {message}"

    source = live.solution_source(get_stage(exercise.stage))
    bugs = live.pitfalls_of(exercise.stage, source, set(exercise.pieces))
    caught = set()
    for bug in bugs:
        broken = upto[:-1] + [apply_edits(upto[-1], bug)]
        module = run_cells(broken, f"notebook_{bug.name}")
        capsys.readouterr()
        module.check(exercise.title)
        out = " ".join(ANSI.sub("", capsys.readouterr().out).split())  # rich wraps at 80 columns here
        failing = {c.id for c in checks if module.run_check(c, module.ThisNotebook())[0] != module.PASS}
        if failing:
            assert f"looks like a known bug: {live.bug_words(bug)}" in out, f"{bug.name} is not named:\n{out}"
        caught |= failing
    assert caught == {c.id for c in checks}, (
        f"checks no known bug of {exercise.title} fails: {sorted({c.id for c in checks} - caught)}"
    )
