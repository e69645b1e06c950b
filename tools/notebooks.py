"""The two notebooks, generated from the sources: the whole walk, and the same walk with pieces to write.

    notebooks/transformer_from_scratch.ipynb   transformer.py's preamble, then for each of the 12 stages a
                                               markdown cell (manifest and stage docstring), transformer.py's
                                               section and the stage's demo; it ends with the demo training
                                               and an attention figure
    notebooks/exercises.ipynb                  the same code without the demos, EXERCISES left blank
                                               (tools/live.py's blanks and hints), each followed by a check
                                               cell; the checks are the project's tests, copied in with what
                                               they need, run by tools/checks.py's code, with the words of
                                               the known bugs they catch

Both need only torch, matplotlib and rich. `make notebooks` writes them and runs them in a fresh kernel, so
that they are committed with their outputs; tests/test_notebooks.py fails when a code cell drifts from its
source and runs them again.

    python tools/notebooks.py write [--no-execute]
    python tools/notebooks.py check                  # exit 1 when a committed code cell drifted
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from debug_pitfalls.variants import apply_edits  # noqa: E402
from stages.layout import sections, split_parts  # noqa: E402
from stages.manifest import get_stage  # noqa: E402
from tools import live  # noqa: E402
from tools.checks import PASS, run_check, shape_of  # noqa: E402
from transformer import OneLineParser  # noqa: E402 - one line on stderr and exit status 2 for bad usage

PROG = "tools/notebooks.py"
FOLDER = REPO / "notebooks"
FULL, EXERCISES_PATH = FOLDER / "transformer_from_scratch.ipynb", FOLDER / "exercises.ipynb"
NUMBERS = [s.number for s in live.MAIN_STAGES]
STEPS = 400  # the demo's training steps, as `python transformer.py` (main's --steps default)
REGENERATE = "make notebooks"  # the one command that writes them


@dataclass(frozen=True)
class Exercise:
    title: str
    pieces: tuple[str, ...]  # tools/live.py BLANKS pieces, all of one stage

    @property
    def blanks(self) -> list[live.Blank]:
        return [b for b in live.BLANKS if b.piece in self.pieces]

    @property
    def stage(self) -> int:
        return self.blanks[0].stage


EXERCISES = (
    Exercise("the positional encoding", ("PositionalEncoding.__init__", "PositionalEncoding.forward")),
    Exercise("scaled dot-product attention", ("scaled_dot_product_attention",)),
    Exercise("split and merge the heads", ("MultiHeadAttention.split_heads", "MultiHeadAttention.merge_heads")),
    Exercise("Add & Norm", ("AddAndNorm.forward",)),
    Exercise("the subsequent mask", ("subsequent_mask",)),
    Exercise("the label-smoothed loss", ("label_smoothed_loss",)),
)


# --- the sources -------------------------------------------------------------


def reference() -> str:
    return (REPO / "transformer.py").read_text(encoding="utf-8")


def walk() -> tuple[str, str, dict[int, str]]:
    """transformer.py as (its docstring, its preamble, {stage: its section}), without the `if __name__` block."""
    parts = split_parts(reference(), "transformer.py")
    code = "\n".join(parts.library_lines("transformer.py")) + "\n"
    preamble, by_stage = sections(code, NUMBERS)
    return parts.docstring, preamble.strip("\n"), {n: text.strip("\n") for n, text in by_stage.items()}


def explanation(number: int) -> str:
    """What a stage's docstring says about it: from its second paragraph up to "This file is transformer.py"."""
    stage = get_stage(number)
    docstring = split_parts(stage.path.read_text(encoding="utf-8"), stage.path.name).docstring
    body = docstring.strip().strip('"').split("\n\n", 1)
    text = body[1].split("This file is transformer.py")[0].strip() if len(body) > 1 else ""
    if number == live.LAST:  # stage 12 is transformer.py: its docstring opens the notebook
        return (
            "The section ends with `main()`, what `python transformer.py` runs; the cells after it run the same "
            "training and decoding directly, then draw what the model attends to."
        )
    return text


def demo_code(number: int) -> str:
    """A stage's demo block, run at once instead of under `if __name__ == "__main__":`."""
    stage = get_stage(number)
    demo = split_parts(stage.path.read_text(encoding="utf-8"), stage.path.name).demo
    guard = 'if __name__ == "__main__":\n    demo()'
    if guard not in demo:
        raise live.LiveError(f"{stage.path.name}'s demo block must end with {guard!r}")
    return demo.replace(guard, "demo()").strip("\n")


def stage_markdown(number: int) -> str:
    stage = get_stage(number)
    return f"## Stage {number} · {stage.title}\n\n*Paper: {stage.paper}.* {stage.summary}\n\n{explanation(number)}"


def training_code() -> str:
    return f"""# Stage 12's demo is `python transformer.py`: main() draws a terminal progress bar, so here the same
# train_toy_model and exact_match run directly, printing the loss as they go.
STEPS = {STEPS}  # main()'s default (--steps)


def follow(step: int, loss: float, lr: float) -> None:
    if step % 50 == 0:
        print(f"step {{step:4d}}  loss {{loss:.3f}}  lr {{lr:.2e}}")


torch.set_num_threads(1)  # a model this small trains faster on one thread than on two that wait for each other
model, test_src, test_tgt, seconds = train_toy_model("reverse", STEPS, on_step=follow)
predictions, correct = exact_match(model, test_src, test_tgt)
hits = int(correct.sum())
print(f"exact match on held-out sequences: {{100 * hits / len(correct):.1f}}% ({{hits}}/{{len(correct)}}), "
      f"after {{seconds:.1f}} s of training")"""


FIGURE_CODE = """import matplotlib.pyplot as plt


def token_names(tokens: Tensor) -> list[str]:
    return [{PAD: "pad", BOS: "bos", EOS: "eos"}.get(t, str(t - FIRST_SYMBOL)) for t in tokens.tolist()]


src, tgt = test_src[:1], test_tgt[:1]  # (1, S), (1, T): the first held-out example
cross = model.decoder.layers[-1].cross_attn
cross.keep_weights = True  # keep the attention weights of the next forward pass
with torch.no_grad():
    model.eval()(src, tgt[:, :-1])
weights = cross.last_weights[0]  # (H, T, S): per head, each decoder input's weights over the source
cross.keep_weights = False

fig, axes = plt.subplots(1, weights.size(0), figsize=(3.4 * weights.size(0), 3.6), constrained_layout=True)
for h, ax in enumerate(axes):
    ax.imshow(weights[h], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"head {h}")
    ax.set_xticks(range(src.size(1)), token_names(src[0]), fontsize=7)
    ax.set_yticks(range(tgt.size(1) - 1), token_names(tgt[0, :-1]), fontsize=7)
    ax.set_xlabel("source")
axes[0].set_ylabel("decoder input")
fig.suptitle("Encoder-decoder attention of the last decoder layer, trained model, held-out example")
plt.show()"""


def _cell(kind: str, source: str, cell_id: str, origin: str = "", **metadata) -> nbformat.NotebookNode:
    make = new_code_cell if kind == "code" else new_markdown_cell
    cell = make(source, id=cell_id)
    if origin:
        cell.metadata["origin"] = origin  # where the cell's code comes from: the drift test names it
    cell.metadata.update(metadata)
    return cell


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


INTRO = """# I Built a Transformer from Scratch So You Don't Have To

The encoder-decoder Transformer of *Attention Is All You Need* (Vaswani et al., 2017), built in twelve
stages, each one idea of the paper: the code of each cell is a section of
[`transformer.py`](../transformer.py), followed by the demo of that stage (`stages/`). It needs only torch,
matplotlib and rich, as Colab has them; it reads no file of the repository.

This notebook is generated from the sources by `make notebooks`; do not edit it by hand. Run it top to
bottom: it ends by training the demo model ({steps} steps on the reverse task) and drawing its attention.
On a 2-core CPU it takes well under two minutes.

The module docstring of `transformer.py`:

```text
{docstring}
```"""

EXERCISE_INTRO = """# Write it yourself: the Transformer with {n} pieces missing

The same walk as [`transformer_from_scratch.ipynb`](transformer_from_scratch.ipynb), without the demos, and
with {n} pieces left for you: {titles}. Each blank raises `NotImplementedError` with a hint (the paper's
equation and the shapes in and out). Write the body in its cell, run the cell, then run the check cell below
it: one line per property, ✓ or ✗ with what went wrong, and the words of a known bug when yours looks like one.

Run the cells from the top: the checks cell right below defines the checks. They are the repository's own
tests (`tests/`), copied in by `make notebooks` with what they need; it runs them with the code of
`tools/checks.py`, as `make check N=..` does in a terminal. The pieces you do not write are complete, so every
other cell runs as it is. This notebook is generated from the sources; your edits are yours."""


def full_notebook() -> nbformat.NotebookNode:
    docstring, preamble, by_stage = walk()
    text = docstring.strip().removeprefix('"""').removesuffix('"""').strip()
    cells = [
        _cell("markdown", INTRO.format(steps=STEPS, docstring=text), "intro"),
        _cell("code", preamble, "preamble", "transformer.py, before stage 1 (imports, TransformerConfig)"),
    ]
    for number in NUMBERS:
        cells.append(_cell("markdown", stage_markdown(number), f"stage-{number:02d}-text"))
        cells.append(_cell("code", by_stage[number], f"stage-{number:02d}-code", f"transformer.py, stage {number}"))
        if number != live.LAST:
            origin = f"{get_stage(number).path.relative_to(REPO).as_posix()}, its demo block"
            cells.append(_cell("code", demo_code(number), f"stage-{number:02d}-demo", origin))
    cells += [
        _cell("markdown", "## The demo: train, decode, look at the attention", "demo-text"),
        _cell("code", training_code(), "demo-training", f"{PROG}, the demo training"),
        _cell("code", FIGURE_CODE, "demo-figure", f"{PROG}, the attention figure"),
    ]
    return _notebook(cells)


# --- the exercise notebook ---------------------------------------------------


def checks_of(exercise: Exercise) -> tuple[list[live.Case], dict[str, dict[str, str]]]:
    """The cases that miss this exercise's blanks, and {bug words: {check id: message shape}} for its bugs."""
    stage_checks = live.stage_checks(exercise.stage, with_known=False)
    source = live.solution_source(get_stage(exercise.stage))
    blank = live.load_source(live.blank_source(source, exercise.blanks), f"exercise_{exercise.stage}")
    wanted = {c.id for c in stage_checks.checks if run_check(c, blank)[0] != PASS}
    cases = [c for c in live.all_cases() if c.id in wanted and c.stage == exercise.stage]
    checks = [live.to_check(c) for c in cases]
    known: dict[str, dict[str, str]] = {}
    for pitfall in live.pitfalls_of(exercise.stage, source, set(exercise.pieces)):
        variant = live.load_source(apply_edits(source, pitfall), f"exercise_{exercise.stage}_{pitfall.name}")
        for check in checks:
            status, message = run_check(check, variant)
            if status != PASS:
                known.setdefault(live.bug_words(pitfall), {})[check.id] = shape_of(message)
    return cases, known


class Gatherer:
    """The source of test functions and of everything they use from the project's modules, dependencies
    first; imports of other libraries stay imports. Two different definitions under one name are an error."""

    PROJECT = ("tests", "bench", "tools", "stages", "debug_pitfalls")
    SKIP = {"pytest", "annotations"}  # pytest: the notebook's stand-in; annotations: a __future__ import

    def __init__(self):
        self.imports: list[str] = []
        self.definitions: list[str] = []
        self.seen: dict[str, tuple[str, str]] = {}  # name -> (file, name there)
        self.index: dict[Path, dict[str, tuple[str, ast.AST, str]]] = {}

    def _index(self, path: Path) -> dict[str, tuple[str, ast.AST, str]]:
        if path not in self.index:
            text = path.read_text(encoding="utf-8")
            entries = {}
            for node in ast.parse(text).body:
                if isinstance(node, ast.FunctionDef | ast.ClassDef):
                    entries[node.name] = ("def", node, text)
                elif isinstance(node, ast.Assign | ast.AnnAssign):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        for name in ast.walk(target):
                            if isinstance(name, ast.Name):
                                entries[name.id] = ("def", node, text)
                elif isinstance(node, ast.Import | ast.ImportFrom):
                    for alias in node.names:
                        entries[alias.asname or alias.name.split(".")[0]] = ("import", node, alias.name)
            self.index[path] = entries
        return self.index[path]

    def add(self, path: Path, name: str, as_name: str | None = None) -> None:
        as_name = as_name or name
        entry = self._index(path).get(name)
        if entry is None or as_name in self.SKIP:
            return  # a builtin, a parameter or a local name
        kind, node, extra = entry
        if kind == "import":
            module = getattr(node, "module", None)
            if module and module.split(".")[0] in self.PROJECT:
                self.add(REPO / (module.replace(".", "/") + ".py"), extra, as_name)
                return
            if module == "__future__":
                return
            if isinstance(node, ast.ImportFrom):
                key = (f"from {module} import {extra}" + (f" as {as_name}" if as_name != extra else ""), "")
            else:
                key = (f"import {extra}" + (f" as {as_name}" if as_name != extra.split(".")[0] else ""), "")
        else:
            key = (str(path), name)
        if as_name in self.seen:
            if self.seen[as_name] != key:
                raise live.LiveError(f"two different definitions of {as_name!r} would meet in the notebook: {key}")
            return
        self.seen[as_name] = key
        if kind == "import":
            self.imports.append(key[0])
            return
        for used in ast.walk(node):
            if isinstance(used, ast.Name) and used.id != as_name:
                self.add(path, used.id)
            elif isinstance(used, ast.Attribute) and isinstance(used.value, ast.Name):
                self.add(path, used.value.id)
        source = ast.get_source_segment(extra, node)
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            source = source[source.index("def ") :]  # the pytest marks go: the check list says what they said
        if as_name != name:
            source += f"\n\n{as_name} = {name}"
        self.definitions.append(source)


def checks_code(exercises: tuple[Exercise, ...] = EXERCISES) -> str:
    """The checks cell: tools/checks.py's code, the tests with what they use, and the table of checks."""
    gather = Gatherer()
    table, known_table = [], {}
    for exercise in exercises:
        cases, known = checks_of(exercise)
        rows = []
        for case in cases:
            gather.add(REPO / (case.module.replace(".", "/") + ".py"), case.name)
            kwargs = ", ".join(f"{name}={source}" for name, source in case.params)
            rows.append(f"        Check({case.id!r}, {case.name}, dict({kwargs})),")
        table.append(f"    {exercise.title!r}: [\n" + "\n".join(rows) + "\n    ],")
        known_table[exercise.title] = known
    runtime = (REPO / "tools" / "checks.py").read_text(encoding="utf-8")
    runtime_parts = split_parts(runtime, "tools/checks.py")
    runtime_code = runtime_parts.code.replace("from __future__ import annotations\n\n", "").strip("\n")
    defined = {n for n in ast.parse(reference()).body for n in [getattr(n, "name", None)] if n}
    clash = sorted(defined & set(gather.seen))
    if clash:
        raise live.LiveError(f"the checks would redefine {clash} of transformer.py in the notebook")
    known_json = json.dumps(known_table, indent=1, ensure_ascii=False)
    return "\n\n".join(
        [
            "# The checks, generated by `make notebooks` from tests/ and tools/checks.py: run this cell, no need to read it.",
            runtime_code,
            "pytest = PytestStandIn  # the checks are pytest tests: this stands in for the few parts of pytest they use",
            "\n".join(sorted(set(gather.imports))),
            "\n\n\n".join(gather.definitions),
            "CHECKS = {\n" + "\n".join(table) + "\n}",
            f"# the known bugs of each exercise: {{the bug's words: {{check: the failure it gives}}}}\nKNOWN = {known_json}",
            '''class ThisNotebook:
    """The module under test is this notebook: the checks read your latest definitions."""

    def __getattr__(self, name: str):
        try:
            return globals()[name]
        except KeyError:
            raise AttributeError(f"{name} is not defined yet: run the cells above this one") from None


def check(exercise: str) -> None:
    """Run the checks of one exercise on what this notebook defines now."""
    report(CHECKS[exercise], ThisNotebook(), KNOWN[exercise], title=f"checks: {exercise}")''',
        ]
    )


def exercise_cells(exercise: Exercise, section: str, number: int) -> list:
    blanked = live.blank_source(section, exercise.blanks)
    return [
        _cell(
            "code",
            blanked,
            f"stage-{number:02d}-exercise",
            f"transformer.py, stage {number}, with {', '.join(exercise.pieces)} blank",
            exercise=exercise.title,
        ),
        _cell("code", f"check({exercise.title!r})", f"stage-{number:02d}-check", f"{PROG}, a check cell"),
    ]


def exercise_notebook() -> nbformat.NotebookNode:
    _, preamble, by_stage = walk()
    by_number = {e.stage: e for e in EXERCISES}
    titles = ", ".join(e.title for e in EXERCISES)
    cells = [
        _cell("markdown", EXERCISE_INTRO.format(n=len(EXERCISES), titles=titles), "intro"),
        _cell("code", preamble, "preamble", "transformer.py, before stage 1 (imports, TransformerConfig)"),
        _cell("code", checks_code(), "checks", f"{PROG}: tests/, tools/checks.py and the known bugs"),
    ]
    for number in NUMBERS:
        cells.append(_cell("markdown", stage_markdown(number), f"stage-{number:02d}-text"))
        if number in by_number:
            cells += exercise_cells(by_number[number], by_stage[number], number)
        else:
            cells.append(_cell("code", by_stage[number], f"stage-{number:02d}-code", f"transformer.py, stage {number}"))
    return _notebook(cells)


def with_solutions(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook with every blank cell replaced by the finished code of its stage."""
    _, _, by_stage = walk()
    solved = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in solved.cells:
        if "exercise" in cell.metadata:
            number = next(e.stage for e in EXERCISES if e.title == cell.metadata["exercise"])
            cell.source = by_stage[number]
    return solved


# --- running them ------------------------------------------------------------


def execute(nb: nbformat.NotebookNode, timeout: int = 600, allow_errors: bool = False) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel of this python (the venv's), in an empty temporary
    directory, so it can only use what it defines. The kernel spec lives in a temporary folder too: no
    Jupyter set-up of the user's is needed, or read."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    with tempfile.TemporaryDirectory(prefix="notebook-run-") as folder:
        kernels = Path(folder) / "kernels"
        spec = kernels / "transformer-venv"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "venv", "language": "python"}))
        work = Path(folder) / "work"
        work.mkdir()
        manager = AsyncKernelManager(
            kernel_name="transformer-venv",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
            transport="ipc",  # local sockets in the temporary folder, not TCP ports
            connection_file=str(Path(folder) / "kernel.json"),
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        env["IPYTHONDIR"] = str(Path(folder) / "ipython")  # the kernel's profile: not in the home folder
        client = NotebookClient(
            nb,
            km=manager,
            timeout=timeout,
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(work)}},
        )
        try:
            client.execute(env=env)
        finally:  # the kernel manager is ours, not nbclient's: so is the shutdown
            if run_sync(manager.is_alive)():
                run_sync(manager.shutdown_kernel)(now=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def drifted(committed: nbformat.NotebookNode, generated: nbformat.NotebookNode, name: str) -> list[str]:
    """One sentence per code cell of the committed notebook that differs from what the sources give now."""
    problems = []
    ours = [c for c in committed.cells if c.cell_type == "code"]
    theirs = [c for c in generated.cells if c.cell_type == "code"]
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a.source != b.source:
            lines_a, lines_b = a.source.splitlines(), b.source.splitlines()
            at = next(
                (j for j, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)) if x != y),
                min(len(lines_a), len(lines_b)),
            )
            has = lines_a[at] if at < len(lines_a) else "<end of cell>"
            wants = lines_b[at] if at < len(lines_b) else "<end of cell>"
            origin = b.metadata.get("origin", "its source")
            problems.append(
                f"{name}: code cell {i + 1} ({b.get('id')}, from {origin}) differs at its line {at + 1}: "
                f"has {has!r}, the source gives {wants!r}; run `{REGENERATE}`"
            )
    if len(ours) != len(theirs):
        problems.append(f"{name} has {len(ours)} code cells, the sources give {len(theirs)}; run `{REGENERATE}`")
    return problems


def check_all() -> list[str]:
    problems = []
    for path, build in ((FULL, full_notebook), (EXERCISES_PATH, exercise_notebook)):
        name = path.relative_to(REPO).as_posix()
        if not path.exists():
            problems.append(f"{name} is missing; run `{REGENERATE}`")
            continue
        problems += drifted(nbformat.read(path, as_version=4), build(), name)
    return problems


def write_all(run: bool = True) -> list[tuple[Path, float]]:
    FOLDER.mkdir(exist_ok=True)
    written = []
    for path, build in ((FULL, full_notebook), (EXERCISES_PATH, exercise_notebook)):
        start = time.perf_counter()
        nb = build()
        if run:
            nb = execute(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        written.append((path, time.perf_counter() - start))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Write the notebooks from the sources, or check them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    write = commands.add_parser("write", help="generate both notebooks and run them, so they carry outputs")
    write.add_argument("--no-execute", action="store_true", help="write them without outputs")
    commands.add_parser("check", help="exit 1 when a committed code cell differs from its source")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console()
    try:
        if args.command == "check":
            problems = check_all()
            for problem in problems:
                print(f"{PROG}: {problem}", file=sys.stderr)
            if not problems:
                console.print("[green]both notebooks are in step with their sources[/]")
            return 1 if problems else 0
        for path, seconds in write_all(run=not args.no_execute):
            console.print(f"wrote {path.relative_to(REPO)} ({seconds:.0f} s{'' if args.no_execute else ', run'})")
        return 0
    except live.LiveError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
