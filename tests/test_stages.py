"""The numbered stages: each follows the rule that keeps it in step with transformer.py, adds exactly one
component, imports, and runs a demo that prints checkable facts about what it adds; plus tools/stages.py.

The components themselves are tested on every stage by the `@pytest.mark.stage(n)` tests (see conftest.py).
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from unittest import mock

import pytest
import torch

from stages.manifest import STAGES, get_stage
from tests.conftest import load_module

ROOT = Path(__file__).resolve().parent.parent
MAIN = [s for s in STAGES if not s.bonus]
LAST = MAIN[-1].number
REFERENCE = (ROOT / "transformer.py").read_text(encoding="utf-8")
HEADER = re.compile(r"^# Stage (\d+) · (.+) · (.+)$", re.M)
# the name each stage brings in: stage N has it, stage N - 1 does not
ARRIVES = {
    1: "TokenEmbedding",
    2: "PositionalEncoding",
    3: "scaled_dot_product_attention",
    4: "MultiHeadAttention",
    5: "PositionwiseFeedForward",
    6: "AddAndNorm",
    7: "Encoder",
    8: "target_mask",
    9: "Decoder",
    10: "Transformer",
    11: "train_step",
    12: "greedy_decode",
}


def stage_id(stage) -> str:
    return f"stage{stage.number:02d}_{stage.slug}"


tool = load_module(ROOT / "tools" / "stages.py")


def text_of(number: int) -> str:
    return get_stage(number).path.read_text(encoding="utf-8")


# --- the rule ----------------------------------------------------------------


@pytest.mark.parametrize("stage", MAIN, ids=stage_id)
def test_every_stage_file_exists(stage):
    assert stage.path.exists(), f"stage {stage.number} has no file: {stage.path} is missing"


def test_every_stage_follows_the_rule():
    problems = tool.check_all(ROOT)
    assert not problems, "stages out of step with transformer.py (run tools/stages.py sync):\n" + "\n".join(problems)


def test_the_last_stage_is_transformer_py_byte_for_byte():
    assert get_stage(LAST).path.read_bytes() == (ROOT / "transformer.py").read_bytes(), (
        f"stage {LAST} must be an exact copy of transformer.py"
    )


def header(number: int) -> str:
    """Stage `number`'s section header line, as transformer.py writes it."""
    stage = get_stage(number)
    return f"# Stage {stage.number} · {stage.title} · {stage.paper}\n"


def _replace_once(text: str, old: str, new: str) -> str:
    assert old in text, f"test set-up: {old!r} not found"
    return text.replace(old, new, 1)


def _edit_last_code_line(text: str) -> str:
    """Append a comment to the last line of the stage's transformer.py part."""
    docstring, library, demo = tool.split_stage(text, "stage")
    code = library.rstrip("\n")
    return docstring + code + "  # edited" + library[len(code) :] + demo


DRIFTS = {
    # (stage, how to break the stage's text, how to break transformer.py, words the complaint must contain)
    "library-line-edited": (7, _edit_last_code_line, None, "drifted"),
    "library-line-deleted": (3, lambda t: _replace_once(t, header(2), ""), None, "drifted"),
    "legend-edited": (5, lambda t: _replace_once(t, "B      batch size", "B      batch"), None, "drifted"),
    "demo-header-missing": (4, lambda t: _replace_once(t, tool.DEMO_TITLE, "# demo"), None, "no demo block"),
    "docstring-missing": (2, lambda t: "# no docstring\n" + t, None, "module docstring"),
    "transformer-py-changed-in-section": (
        5,
        None,
        lambda r: _replace_once(r, header(5), header(5) + "# new\n"),
        "drifted",
    ),
    "last-stage-one-byte-off": (LAST, lambda t: t + "\n", None, "not byte-for-byte"),
}


@pytest.mark.parametrize("case", DRIFTS.values(), ids=DRIFTS.keys())
def test_the_checker_catches_drift(case):
    number, break_stage, break_reference, words = case
    text, reference = text_of(number), REFERENCE
    assert tool.check_stage(number, text, reference) is None, f"test set-up: stage {number} should start in step"
    text = break_stage(text) if break_stage else text
    reference = break_reference(reference) if break_reference else reference
    problem = tool.check_stage(number, text, reference, f"stage {number}")
    assert problem is not None, f"the checker did not notice that stage {number} drifted"
    assert words in problem, f"the complaint should say {words!r}, got: {problem}"


def test_a_change_after_a_stage_does_not_touch_it():
    # a line added to section 5 of transformer.py leaves stages 1-4 in step and moves stages 5 on
    reference = _replace_once(REFERENCE, header(5), header(5) + "# new\n")
    for stage in MAIN:
        problem = tool.check_stage(stage.number, text_of(stage.number), reference)
        if stage.number < 5:
            assert problem is None, f"stage {stage.number} ends before section 5, yet the checker flagged it: {problem}"
        else:
            assert problem is not None, f"stage {stage.number} holds section 5, yet the checker missed the change"


def test_check_and_sync_on_a_copy_of_the_repository(tmp_path, capsys):
    shutil.copy(ROOT / "transformer.py", tmp_path / "transformer.py")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "bonus").mkdir()
    for stage in STAGES:
        shutil.copy(stage.path, tmp_path / stage.path.relative_to(ROOT))
    broken = tmp_path / "stages" / get_stage(6).path.name
    original = broken.read_text(encoding="utf-8")
    broken.write_text(_replace_once(original, header(6), "# Stage 6 · edited\n"), encoding="utf-8")

    assert tool.main(["--root", str(tmp_path), "check"]) == 1, "check must exit 1 when a stage drifted"
    err = capsys.readouterr().err
    assert "stage 6" in err and "06_add_and_norm.py" in err, f"check should name stage 6, said: {err!r}"
    assert len(err.strip().splitlines()) == 1, f"only stage 6 drifted, yet check said: {err!r}"

    assert tool.main(["--root", str(tmp_path), "sync"]) == 0
    assert broken.read_text(encoding="utf-8") == original, "sync did not restore the drifted stage exactly"
    assert tool.main(["--root", str(tmp_path), "check"]) == 0, "check still fails after sync"


@pytest.mark.parametrize("stage", MAIN, ids=stage_id)
def test_section_headers_are_those_of_sections_1_to_n(stage):
    found = [(int(n), title, paper) for n, title, paper in HEADER.findall(stage.path.read_text(encoding="utf-8"))]
    wanted = [(s.number, s.title, s.paper) for s in MAIN if s.number <= stage.number]
    assert found == wanted, f"stage {stage.number} should hold exactly the section headers of stages 1-{stage.number}"


@pytest.mark.parametrize("stage", MAIN, ids=stage_id)
def test_docstring_names_the_stage_and_carries_the_legend(stage):
    docstring = ast.get_docstring(ast.parse(stage.path.read_text(encoding="utf-8")), clean=False)
    legend = tool.LEGEND.search(ast.get_docstring(ast.parse(REFERENCE), clean=False)).group()
    assert legend in docstring, f"stage {stage.number}'s docstring lacks transformer.py's shape legend and masks"
    if stage.number < LAST:
        first = f"Stage {stage.number} of {LAST}: {stage.title} ({stage.paper})."
        assert docstring.startswith(first), f"stage {stage.number}'s docstring should start with {first!r}"
        assert f"make stage N={stage.number}" in docstring, f"stage {stage.number}'s docstring should say how to run it"


@pytest.mark.parametrize("stage", MAIN, ids=stage_id)
def test_every_stage_imports_with_its_component_and_not_the_next(stage):
    module = stage.load()
    assert hasattr(module, ARRIVES[stage.number]), f"stage {stage.number} lacks {ARRIVES[stage.number]}"
    if stage.number + 1 in ARRIVES:
        assert not hasattr(module, ARRIVES[stage.number + 1]), (
            f"stage {stage.number} already holds {ARRIVES[stage.number + 1]}, which belongs to stage {stage.number + 1}"
        )


@pytest.mark.parametrize("stage", MAIN[:-1], ids=stage_id)
def test_the_diff_to_the_next_stage_removes_nothing_from_the_library(stage):
    old, new = stage.path.read_text(encoding="utf-8"), get_stage(stage.number + 1).path.read_text(encoding="utf-8")
    docstring, library, _ = tool.split_stage(old, stage.path.name)
    first, stop = docstring.count("\n"), docstring.count("\n") + library.count("\n")
    removed = tool.removed_lines(old.splitlines(), new.splitlines())
    in_library = [old.splitlines()[i] for i in removed if first <= i < stop]
    assert not in_library, f"going from stage {stage.number} to {stage.number + 1} removes code lines: {in_library[:3]}"
    if stage.number + 1 == LAST:  # transformer.py itself: its code runs to the end of the file
        new_library = tool.split_docstring(new, "next")[1]
    else:
        new_library = tool.split_stage(new, "next")[1]
    assert new_library.startswith(library) and len(new_library) > len(library), (
        f"stage {stage.number + 1}'s code should be stage {stage.number}'s code with more after it"
    )


# --- the demos ---------------------------------------------------------------


@cache
def demo_output(number: int) -> str:
    """What stage `number`'s demo prints, run in-process as `python stages/NN_name.py` would."""
    out = io.StringIO()
    # a wide console, so that rich never wraps a table cell the checks below read
    with mock.patch.dict(os.environ, {"COLUMNS": "160"}), contextlib.redirect_stdout(out):
        if number == LAST:
            module = get_stage(number).load()
            assert module.main(["--steps", "30", "--examples", "1", "--device", "cpu"]) == 0
        else:
            runpy.run_path(str(get_stage(number).path), run_name="__main__")
    return out.getvalue()


def rows(output: str) -> list[list[str]]:
    """The body rows of every rich table in the output, as lists of cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")] for line in output.splitlines() if "│" in line
    ]


def facts(output: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in rows(output)}


def number_after(output: str, words: str) -> float:
    match = re.search(re.escape(words) + r"\s*([-+0-9.e]+)", output)
    assert match, f"the demo should print {words!r} followed by a number"
    return float(match.group(1))


def shape(text: str) -> tuple[int, ...]:
    return tuple(ast.literal_eval(text))


def check_embeddings(out):
    f = facts(out)
    B, L = shape(f["token ids (B, L)"][0])
    d_model = int(re.search(r"sqrt\((\d+)\)", f["scale = sqrt(d_model)"][0]).group(1))
    assert shape(f["embedded (B, L, D)"][0]) == (B, L, d_model), "embedding should map (B, L) to (B, L, D)"
    assert number_after(f["scale = sqrt(d_model)"][0], "=") == pytest.approx(math.sqrt(d_model), abs=1e-4)
    low, high = map(float, re.findall(r"\d+\.\d+", f["output / plain lookup"][0]))
    assert low == high == pytest.approx(math.sqrt(d_model), abs=1e-4), "every entry should be lookup x sqrt(d_model)"
    assert f["token 1 at positions 1 and 3"] == ["same vector"], "a token's vector should not depend on its position"


def check_positional_encoding(out):
    d_model = int(re.search(r"all \d+ x (\d+) entries", out).group(1))
    pe_rows = [r for r in rows(out) if len(r) == 4]
    assert len(pe_rows) >= 8, "the demo should print PE values at several positions"
    for pos, dim, value, _ in pe_rows:
        pos, dim = int(pos), int(dim)
        angle = pos / 10000 ** (2 * (dim // 2) / d_model)
        expected = math.sin(angle) if dim % 2 == 0 else math.cos(angle)
        assert float(value) == pytest.approx(expected, abs=2e-6), f"PE[{pos}, {dim}] is not the §3.5 closed form"
    assert number_after(out, "entries:") < 1e-6
    dots = [(int(k), float(a), float(b)) for k, a, b in (r for r in rows(out) if len(r) == 3)]
    assert len(dots) >= 5, "the demo should print dot products at several distances"
    for k, a, b in dots:
        closed = sum(math.cos(k / 10000 ** (2 * i / d_model)) for i in range(d_model // 2))
        assert a == pytest.approx(b, abs=1e-3), f"PE[0]·PE[{k}] and PE[20]·PE[20+{k}] should agree"
        assert a == pytest.approx(closed, abs=1e-3), f"PE[0]·PE[{k}] should be sum_i cos(k w_i)"
    assert all(x[1] > y[1] for x, y in zip(dots, dots[1:], strict=False)), "the dot products should fall with k"
    assert "gives PE[:5] back: True" in out and "learned parameters: 0" in out


def check_attention(out):
    weight_rows = [r for r in rows(out) if len(r) == 6]
    assert len(weight_rows) == 6, "the demo should print two 3-query x 4-key weight tables"
    for query, *weights, total in weight_rows:
        assert sum(map(float, weights)) == pytest.approx(1.0, abs=3e-4), f"query {query}'s weights should sum to 1"
        assert float(total) == pytest.approx(1.0, abs=1e-4)
    assert all(float(r[4]) > 0 for r in weight_rows[:3]), "without a mask, key 3 should get some weight"
    assert all(r[4] == "0.0000" for r in weight_rows[3:]), "a masked key should get weight exactly 0"
    for title in ("no mask", "key 3 masked"):
        assert number_after(out, f"{title}: max |ours - F.scaled_dot_product_attention| =") < 1e-6
    assert "every key masked gets [0.0, 0.0]" in out, "an all-masked query should get a zero vector"
    for d_k, std, _, ratio in (r for r in rows(out) if len(r) == 4):
        assert float(std) == pytest.approx(math.sqrt(int(d_k)), rel=0.1), "q·k should have std about sqrt(d_k)"
        assert float(ratio) == pytest.approx(1.0, abs=0.1), "after scaling, q·k should have std about 1"


def check_multi_head_attention(out):
    f = facts(out)
    B, L, D = shape(f["x (B, L, D)"][0])
    b, H, length, d_k = shape(f["split_heads (B, H, L, d_k)"][0])
    assert (b, length, H * d_k) == (B, L, D), "split_heads should give (B, H, L, D / H)"
    assert shape(f["weights (B, H, T_q, T_k)"][0]) == (B, H, L, L)
    assert shape(f["merge_heads (B, L, D)"][0]) == shape(f["w_o output (B, L, D)"][0]) == (B, L, D)
    assert "merge_heads(split_heads(y)) == y: True" in out and f"dims {d_k}-{2 * d_k - 1} of w_q(x): True" in out
    for words in ("output difference| =", "weight difference| =", "(theirs: ~mask): max |difference| ="):
        assert number_after(out, words) < 1e-5, f"MultiHeadAttention should match nn.MultiheadAttention ({words})"
    assert number_after(out, "parameters:") == 4 * (D * D + D)


def check_feed_forward(out):
    f = facts(out)
    B, L, D = shape(f["x (B, L, D)"][0])
    F_ = shape(f["ReLU(w_1(x)) (B, L, F)"][0])[2]
    assert shape(f["w_2(...) (B, L, D)"][0]) == (B, L, D)
    assert number_after(out, "max |ffn(x) - Eq. (2)| =") < 1e-5, "the network should compute Eq. (2)"
    assert number_after(out, "change at position 0:") == 0.0, "other positions must not affect position 0"
    assert number_after(out, "change at position 1:") > 1e-3, "position 1 changed, so its output should too"
    assert number_after(out, "parameters:") == 2 * D * F_ + F_ + D


def check_add_and_norm(out):
    f = facts(out)
    assert number_after(f["output mean per position"][0], "max |mean| =") < 1e-5, "each position should have mean 0"
    low, high = map(float, re.findall(r"\d+\.\d+", f["output std per position"][0]))
    assert low == pytest.approx(1.0, abs=1e-3) and high == pytest.approx(1.0, abs=1e-3), "each position: std 1"
    assert number_after(f["vs F.layer_norm(x + sublayer)"][0], "max |diff| =") < 1e-5
    assert f["eval mode, twice"] == ["identical"] and f["train mode, twice"] == ["different"]
    dropped, p = map(float, re.findall(r"\d+\.\d+", f["dropped by dropout"][0]))
    assert dropped == pytest.approx(p, abs=0.01), "dropout should zero about P_drop of the entries"
    assert number_after(f["survivors scaled by"][0], "") == pytest.approx(1 / (1 - p), abs=1e-3)


def check_encoder(out):
    f = facts(out)
    n, d, h, d_ff = map(int, re.search(r"config: N=(\d+), d_model=(\d+), h=(\d+), d_ff=(\d+)", out).groups())
    B, S = shape(f["src tokens (B, S)"][0])
    assert shape(f["encoder output (B, S, D)"][0]) == (B, S, d)
    per_layer = 4 * (d * d + d) + (2 * d * d_ff + d_ff + d) + 4 * d  # attention, feed-forward, two LayerNorms
    assert int(f["parameters, counted"][0]) == n * per_layer, "the encoder's parameter count is off"
    assert number_after(out, "encoder:") > 1e-3, "self-attention should carry a change to other positions"
    assert number_after(out, "encoder, key 5 masked:") == 0.0, "a masked key must not affect other positions"
    assert number_after(out, "feed-forward alone:") == 0.0


def grids(output: str, first_cell: str) -> list[list[list[bool]]]:
    """Every mask table whose header starts with first_cell, as rows of booleans (■ = may attend)."""
    lines, found = output.splitlines(), []
    for start, line in enumerate(lines):
        if not line.strip("┃ ").startswith(first_cell + " ┃"):
            continue
        table = []
        for row in lines[start + 2 :]:  # after the header and the line under it
            if "│" not in row:
                break
            table.append([cell.strip() == "■" for cell in row.strip().strip("│").split("│")[1:]])
        found.append(table)
    return found


def check_masks(out):
    tokens = torch.tensor(ast.literal_eval(re.search(r"tokens (\[\[.*?\]\])", out).group(1)))
    assert grids(out, "seq") == [(tokens != 0).tolist()], "the padding mask should hide exactly the padding"
    subsequent, target = grids(out, "query")
    size = len(subsequent)
    assert subsequent == [[j <= i for j in range(size)] for i in range(size)], "query i may see keys <= i only"
    tgt = ast.literal_eval(re.search(r"target tokens (\[.*?\])", out).group(1))
    assert target == [[j <= i and tgt[j] != 0 for j in range(size)] for i in range(size)], (
        "the target mask should hide padding and the future, nothing else"
    )
    assert number_after(out, "padding tokens, masked:   max change at the real positions") < 1e-5
    assert number_after(out, "padding tokens, no mask:  max change at the real positions") > 1e-3


def check_decoder(out):
    table = [r for r in rows(out) if len(r) == 5]
    changed_at = next(int(r[0]) for r in table if r[1] != r[2])
    for position, _, _, causal, _ in table:
        if int(position) < changed_at:
            assert float(causal) == 0.0, f"the decoder can see the future: position {position} saw a later change"
        else:
            assert float(causal) > 0.0, f"position {position} should see the change at {changed_at}"
    assert any(float(r[4]) > 0 for r in table if int(r[0]) < changed_at), "without the mask the change should leak"
    assert number_after(out, "padded source positions 4, 5: max") == 0.0, "padded source keys should get weight 0"
    assert re.search(r"rows sum to: 1\.0000 to 1\.0000", out)


def composed_parameters(V: int, D: int, F_: int, N: int) -> int:
    attention = 4 * (D * D + D)
    feed_forward = 2 * D * F_ + F_ + D
    return V * D + N * (attention + feed_forward + 4 * D) + N * (2 * attention + feed_forward + 6 * D)


def check_transformer(out):
    f = facts(out)
    (B, S), (_, T) = ast.literal_eval(f["src, tgt (B, S), (B, T)"][0])
    assert shape(f["logits (B, T, V)"][0])[:2] == (B, T)
    assert f["generator.weight is tgt_embed.weight"] == ["True"], "the output projection should share the embedding"
    assert f["src_embed is tgt_embed"] == ["True"]
    assert float(f["positional encoding RMS"][0]) == pytest.approx(math.sqrt(0.5), abs=0.01)
    assert float(f["token vector RMS (x sqrt(D))"][0]) == pytest.approx(1.0, abs=0.2), "deviation 2: scale 1"
    counted, composed = (int(c.replace(",", "")) for c in f["this demo"][3:5])
    assert counted == composed, "the small model's parameter count should equal V x D + N x (layers)"
    for name, paper in (("base", 65e6), ("big", 213e6)):
        D, F_, h = map(int, f[name][:3])
        expected = composed_parameters(37000, D, F_, 6)
        assert f[name][4] == f"{expected / 1e6:.1f}M", f"the {name} model's parameter count is off"
        assert expected == pytest.approx(paper, rel=0.05), f"the {name} model should be near the paper's size"


def check_training(out):
    setting = re.search(r"label smoothing: V=(\d+), true token (\d+), pad (\d+), eps=([0-9.]+)", out)
    assert setting, "the demo should print its label-smoothing setting"
    V, true_token, pad, eps = int(setting[1]), int(setting[2]), int(setting[3]), float(setting[4])
    target = next(r for r in rows(out) if len(r) == V + 1)
    assert float(target[true_token]) == pytest.approx(1 - eps, abs=1e-4), "the true token should get 1 - eps"
    assert float(target[pad]) == 0.0, "padding should get no probability"
    for t in set(range(V)) - {true_token, pad}:
        assert float(target[t]) == pytest.approx(eps / (V - 2), abs=1e-4), "eps should spread evenly over the rest"
    assert number_after(out, "F.cross_entropy(ignore_index=pad)| =") < 1e-6, "eps = 0 should be cross-entropy"
    lrs = [(int(s), float(v)) for s, v in (r for r in rows(out) if len(r) == 2)]
    for step, lr in lrs:
        assert lr == pytest.approx(512**-0.5 * min(step**-0.5, step * 4000**-1.5), rel=1e-3), f"Eq. (3) at {step}"
    assert "betas (0.9, 0.98), eps 1e-09" in out, "Adam should use the betas and eps of §5.3"
    means = [float(r[1]) for r in rows(out) if len(r) == 3 and re.fullmatch(r"\d+-\d+", r[0])]
    assert len(means) >= 4, "the demo should print the loss over several stretches of training"
    assert all(a > b for a, b in zip(means, means[1:], strict=False)), f"the loss should fall: {means}"
    assert means[-1] < 0.75 * means[0], f"the loss should fall clearly: {means}"


def check_decoding(out):
    assert "held-out examples" in out
    match = re.search(r"exact match (\d+\.\d)% \((\d+)/1000\)", out)
    assert match, "the demo should end with the exact-match line"
    assert float(match.group(1)) == pytest.approx(int(match.group(2)) / 10, abs=0.05)


DEMO_CHECKS = {
    1: check_embeddings,
    2: check_positional_encoding,
    3: check_attention,
    4: check_multi_head_attention,
    5: check_feed_forward,
    6: check_add_and_norm,
    7: check_encoder,
    8: check_masks,
    9: check_decoder,
    10: check_transformer,
    11: check_training,
    12: check_decoding,
}


@pytest.mark.parametrize("stage", MAIN, ids=stage_id)
def test_demo_prints_checkable_facts_about_the_new_component(stage):
    DEMO_CHECKS[stage.number](demo_output(stage.number))


# --- README and command line -------------------------------------------------


def test_readme_block_is_what_the_tool_generates():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(tool.README_START), readme.index(tool.README_END) + len(tool.README_END)
    assert readme[start:end] == tool.readme_block(), "README's stages block is stale: run tools/stages.py readme"
    assert "make diff FROM=3 TO=4" in readme[start:end] and "git diff --no-index" in readme[start:end]


@pytest.mark.parametrize(
    "argv,words",
    [
        (["run", "99"], "no stage '99'; the stages are 1 (embeddings)"),
        (["run", "four"], "no stage 'four'; the stages are 1 (embeddings)"),
        (["run"], "expected a stage number, e.g. make stage N=4"),
        (["diff"], "expected a stage number, e.g. make diff FROM=3 TO=4"),
        (["diff", "3", "99"], "no stage '99'"),
        (["diff", "1"], "stage 1 has no stage before it"),
    ],
    ids=["run-99", "run-word", "run-nothing", "diff-nothing", "diff-bad-to", "diff-from-nothing"],
)
def test_bad_stage_numbers_give_one_line_and_exit_2(argv, words, capsys):
    assert tool.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, f"expected one line: {captured.err!r}"
    assert words in captured.err, f"the error should say {words!r}, got {captured.err!r}"
    if "expected" in words:
        assert all(f"{s.number} ({s.slug})" in captured.err for s in STAGES), "the error should list the stages"


def test_bad_number_from_the_command_line_exits_2_with_one_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "stages.py"), "run", "99"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, f"expected exit status 2, got {result.returncode}"
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("tools/stages.py: error: no stage '99'; the stages are"), result.stderr


def test_run_uses_the_venv_python_and_forwards_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(tool.subprocess, "run", lambda argv: calls.append(argv) or subprocess.CompletedProcess(argv, 3))
    assert tool.main(["run", "12", "--steps", "5", "--task", "copy"]) == 3, "run should return the stage's exit status"
    python, path, *args = calls[0]
    assert Path(path) == get_stage(12).path and args == ["--steps", "5", "--task", "copy"]
    assert Path(python).name.startswith("python")


def test_diff_prints_a_plain_unified_diff_when_piped(capsys):
    assert tool.main(["diff", "3", "4"]) == 0
    both = capsys.readouterr().out
    lines = both.splitlines()
    assert lines[0].startswith("--- ") and lines[0].endswith("03_attention.py"), lines[0]
    assert lines[1].startswith("+++ ") and lines[1].endswith("04_multi_head_attention.py"), lines[1]
    assert "+class MultiHeadAttention(nn.Module):" in lines, "the diff from 3 to 4 should add MultiHeadAttention"
    assert "\x1b[" not in both, "piped output should carry no colour codes"
    assert tool.main(["diff", "4"]) == 0
    assert capsys.readouterr().out == both, "diff 4 should be the same as diff 3 4"


def test_list_shows_every_stage_in_step(capsys):
    with mock.patch.dict(os.environ, {"COLUMNS": "200"}):
        assert tool.main(["list"]) == 0
    table = facts(capsys.readouterr().out)
    for stage in STAGES:
        row = table.get(str(stage.number))
        assert row is not None and row[0] == stage.path.name, f"list should show stage {stage.number}"
        wanted = "in step" if not stage.bonus else "bonus" if stage.path.exists() else "missing"
        assert row[-1] == wanted, f"list should call stage {stage.number} {wanted!r}, not {row[-1]!r}"
