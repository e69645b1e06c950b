"""Write it yourself: a stage with what it adds left blank, and checks that say in seconds whether you got it right.

    make live N=4               # live/04_multi_head_attention.py: stage 4, its new pieces blank
    make check N=4              # the tests of stages 1-4 against that file, one line per property
    make live N=4 SOLUTION=1    # the finished stage instead (the attempt is kept as .attempt)

A blank is a function or method body replaced by `raise NotImplementedError(hint)`, the hint giving the
paper's equation and the shapes in and out; everything the stage had before stays complete, so the file
imports and the earlier stages' checks pass. The checks are the project's own tests marked
`@pytest.mark.stage(n)` (tests/conftest.py), each with its parameters: those of stage n that fail when stage
n's pieces are blank. A failure that reads like a known bug's (debug_pitfalls/registry.py, or one of the
bugs planted below for pieces the registry has none for) in what the stage adds is followed by that bug's words
and its fix.

    python tools/live.py live N [--solution] [--dir live]
    python tools/live.py check N [--dir live]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import itertools
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from debug_pitfalls.registry import PITFALLS, Edit, Pitfall  # noqa: E402
from debug_pitfalls.variants import PitfallDriftError, apply_edits, build_module  # noqa: E402
from stages.bonus.sync import unit_of_each_line  # noqa: E402
from stages.layout import section_header, section_start, split_parts  # noqa: E402
from stages.manifest import STAGES, Stage, get_stage, import_file  # noqa: E402
from tools.checks import BLANK, PASS, Check, report, run_check, shape_of  # noqa: E402
from transformer import OneLineParser  # noqa: E402 - one line on stderr and exit status 2 for bad usage

PROG = "tools/live.py"
MAIN_STAGES = tuple(s for s in STAGES if not s.bonus)
LAST = MAIN_STAGES[-1].number
TEST_FILES = ("test_components.py", "test_model.py", "test_parity.py", "test_properties.py", "test_training.py")


@dataclass(frozen=True)
class Blank:
    """A piece a stage adds, left for the reader to write: a function, or a method as Class.method."""

    stage: int
    piece: str
    hint: str  # the paper's equation and the shapes in and out, one line


BLANKS: tuple[Blank, ...] = (
    Blank(1, "TokenEmbedding.forward", "§3.4: embedding(tokens) * sqrt(d_model); tokens (B, L) -> (B, L, D)"),
    Blank(
        2,
        "PositionalEncoding.__init__",
        "§3.5: a (max_len, D) buffer 'pe', PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(same angle)",
    ),
    Blank(2, "PositionalEncoding.forward", "§3.5: x + pe[:L]; x (B, L, D) -> (B, L, D)"),
    Blank(
        3,
        "scaled_dot_product_attention",
        "Eq. (1): softmax(Q K^T / sqrt(d_k)) V, keys masked where mask is False; "
        "(..., T_q, d_k), (..., T_k, d_k), (..., T_k, d_v) -> output (..., T_q, d_v), weights (..., T_q, T_k)",
    ),
    Blank(
        4,
        "MultiHeadAttention.forward",
        "§3.2.2: W^O merge_heads(Attention(split_heads(W^Q q), split_heads(W^K k), split_heads(W^V v))); "
        "(B, T_q, D) -> (B, T_q, D)",
    ),
    Blank(
        4,
        "MultiHeadAttention.split_heads",
        "§3.2.2: (B, L, D) -> (B, H, L, d_k), head i = features i*d_k ... of each position",
    ),
    Blank(
        4,
        "MultiHeadAttention.merge_heads",
        "§3.2.2: Concat(head_1, ..., head_h) per position: (B, H, L, d_k) -> (B, L, D)",
    ),
    Blank(
        5,
        "PositionwiseFeedForward.forward",
        "Eq. (2): max(0, x W_1 + b_1) W_2 + b_2; (B, L, D) -> (B, L, F) -> (B, L, D)",
    ),
    Blank(6, "AddAndNorm.forward", "§3.1, §5.4: LayerNorm(x + Dropout(sublayer_out)), post-LN; (B, L, D) -> (B, L, D)"),
    Blank(
        7,
        "EncoderLayer.forward",
        "§3.1: self-attention (src_mask), then feed-forward, each in Add & Norm; (B, S, D) -> (B, S, D)",
    ),
    Blank(8, "padding_mask", "True where the key is not padding: tokens (B, L) -> (B, 1, 1, L)"),
    Blank(
        8, "subsequent_mask", "§3.2.3: query i may attend to keys j <= i: (1, 1, T, T), True on and below the diagonal"
    ),
    Blank(8, "target_mask", "padding_mask & subsequent_mask: tgt (B, T) -> (B, 1, T, T)"),
    Blank(
        9,
        "DecoderLayer.forward",
        "§3.1: masked self-attention (tgt_mask), attention over memory (src_mask), feed-forward, each in Add & Norm; "
        "(B, T, D) -> (B, T, D)",
    ),
    Blank(10, "Transformer.embed", "§3.4, §3.5, §5.4: Dropout(embedding(tokens) + PE); tokens (B, L) -> (B, L, D)"),
    Blank(
        10,
        "Transformer.forward",
        "Figure 1: default masks, embed + encode src, embed + decode tgt, project: (B, S), (B, T) -> (B, T, V_tgt)",
    ),
    Blank(
        11,
        "label_smoothed_loss",
        "§5.4: cross-entropy against 1 - eps on the truth, eps / (V - 2) elsewhere, 0 on padding, mean over real "
        "tokens; (B, T, V), (B, T) -> scalar",
    ),
    Blank(11, "learning_rate", "Eq. (3): d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)"),
    Blank(
        11,
        "make_optimizer",
        "§5.3: Adam(lr=1, betas=(0.9, 0.98), eps=1e-9) and a LambdaLR giving learning_rate(i + 1, ...) at step i",
    ),
    Blank(
        12,
        "greedy_decode",
        "encode once, then append the argmax of the decoder's last position until EOS or each sentence's "
        "max_len (per_sentence_max_len); src (B, S) -> (B, <= max_len + 1), starting with bos_id",
    ),
)

# Bugs planted for pieces that debug_pitfalls/registry.py has none for, in its words and form, so that every
# check is seen to catch a real mistake. They only serve the live checks: `make test-bugs` does not run them.
PLANTED: tuple[Pitfall, ...] = (
    Pitfall(
        name="positional_encoding_learned",
        title="Positional encoding stored as a parameter",
        loud=False,
        bug="The sinusoid table is an nn.Parameter, so the optimiser changes it and it is saved as a weight.",
        symptom="It trains; the encoding drifts away from the formula of §3.5.",
        paper="§3.5: fixed sinusoids, not learned",
        fix="register_buffer('pe', ...): a buffer moves with the module but is not learned.",
        edits=(Edit('self.register_buffer("pe", pe.float(), persistent=False)', "self.pe = nn.Parameter(pe.float())"),),
    ),
    Pitfall(
        name="feed_forward_without_relu",
        title="Feed-forward network without its ReLU",
        loud=False,
        bug="The two linear maps of the feed-forward network follow each other with no max(0, .) between them.",
        symptom="It trains, worse: two linear maps in a row are one linear map.",
        paper="§3.3, Eq. (2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2",
        fix="Put torch.relu between w_1 and w_2.",
        edits=(Edit("self.w_2(torch.relu(self.w_1(x)))", "self.w_2(self.w_1(x))"),),
    ),
    Pitfall(
        name="encoder_ignores_padding",
        title="Encoder self-attention without the source mask",
        loud=False,
        bug="The encoder layer calls self-attention without src_mask, so every position reads the padding.",
        symptom="Outputs change with the amount of padding in a batch.",
        paper="§3.2.3: attention must not look at padding",
        fix="Pass src_mask to self_attn.",
        edits=(Edit("self.self_attn(x, x, x, src_mask)", "self.self_attn(x, x, x)"),),
    ),
    Pitfall(
        name="cross_attention_ignores_padding",
        title="Encoder-decoder attention without the source mask",
        loud=False,
        bug="The decoder's attention over the encoder output ignores src_mask and reads the padded source positions.",
        symptom="Translations change with the amount of source padding in a batch.",
        paper="§3.2.3: encoder-decoder attention over the real source positions",
        fix="Pass src_mask to cross_attn.",
        edits=(Edit("self.cross_attn(x, memory, memory, src_mask)", "self.cross_attn(x, memory, memory, None)"),),
    ),
    Pitfall(
        name="target_mask_without_causal_part",
        title="Target mask without its causal part",
        loud=False,
        bug="The model's default target mask hides padding only, so each decoder position reads the future.",
        symptom="Training loss falls fast (the model reads the answer), then greedy decoding produces garbage.",
        paper="§3.2.3: prevent leftward information flow in the decoder",
        fix="Default tgt_mask = target_mask(tgt, pad_id): padding & subsequent positions.",
        edits=(
            Edit(
                "tgt_mask = target_mask(tgt, self.config.pad_id)  # (B, 1, T, T)",
                "tgt_mask = padding_mask(tgt, self.config.pad_id)  # (B, 1, 1, T)",
            ),
        ),
    ),
    Pitfall(
        name="source_mask_of_the_first_sentence",
        title="One sentence's source mask for the whole batch",
        loud=False,
        bug="The default source mask is built from the first sentence and broadcast over the batch, so every "
        "other sentence is masked where the first one has padding.",
        symptom="A sentence gets another translation in a batch than alone, and padding changes the logits.",
        paper="§3.2.3: attention must not look at padding (each sentence's own)",
        fix="Default src_mask = padding_mask(src, pad_id), one row per sentence: (B, 1, 1, S).",
        edits=(
            Edit(
                "src_mask = padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)",
                "src_mask = padding_mask(src[:1], self.config.pad_id)  # (1, 1, 1, S)",
            ),
        ),
    ),
    Pitfall(
        name="source_padding_unmasked",
        title="No default source padding mask",
        loud=False,
        bug="Without a src_mask argument the model masks nothing, so the encoder and the decoder read the padding.",
        symptom="The same sentence gets another translation when the batch pads it more.",
        paper="§3.2.3: attention must not look at padding",
        fix="Default src_mask = padding_mask(src, pad_id).",
        edits=(
            Edit(
                "src_mask = padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)",
                "src_mask = None  # (B, 1, 1, S)",
            ),
        ),
    ),
    Pitfall(
        name="embedding_dropout_at_eval",
        title="Embedding dropout still active at eval",
        loud=False,
        bug="The dropout after the embeddings is F.dropout, which defaults to training=True, so eval() keeps it on.",
        symptom="The same input gives two different outputs in eval mode; decoding is noisy.",
        paper="§5.4: dropout on the sums of the embeddings and the positional encodings, in training",
        fix="Use the nn.Dropout module (it follows model.eval()) or pass training=self.training.",
        edits=(
            Edit(
                "return self.embed_dropout(self.pos_encoding(embedding(tokens)))",
                "return F.dropout(self.pos_encoding(embedding(tokens)), self.embed_dropout.p)",
            ),
        ),
    ),
    Pitfall(
        name="learning_rate_without_d_model_factor",
        title="Learning rate without its d_model^-0.5",
        loud=False,
        bug="The schedule leaves out the factor d_model^-0.5, so the rate is sqrt(d_model) times too large.",
        symptom="Training diverges or collapses after warm-up; smaller models suffer least.",
        paper="§5.3, Eq. (3): lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)",
        fix="Multiply the min(...) by d_model**-0.5.",
        edits=(Edit("d_model**-0.5 * min(step", "min(step"),),
    ),
    Pitfall(
        name="adam_default_betas",
        title="Adam with its default betas",
        loud=False,
        bug="The optimiser keeps torch's Adam defaults, beta_2 = 0.999 and eps = 1e-8, not the paper's.",
        symptom="It trains; the second-moment estimate reacts ten times more slowly than the paper's.",
        paper="§5.3: Adam with beta_1 = 0.9, beta_2 = 0.98, eps = 1e-9",
        fix="torch.optim.Adam(..., betas=(0.9, 0.98), eps=1e-9).",
        edits=(Edit("betas=(0.9, 0.98), eps=1e-9", "betas=(0.9, 0.999), eps=1e-8"),),
    ),
    Pitfall(
        name="smoothing_spread_over_every_token",
        title="Label smoothing spread over every token",
        loud=False,
        bug="eps is divided by V instead of by the V - 2 tokens that are neither the truth nor padding.",
        symptom="It trains; the smoothed target no longer sums to 1, so the loss's minimum moves.",
        paper="§5.4: label smoothing of value eps_ls",
        fix="Give each other non-padding token eps / (V - 2).",
        edits=(Edit("smoothing / (V - 2)", "smoothing / V"),),
    ),
    Pitfall(
        name="greedy_starts_without_bos",
        title="Greedy decoding starts from padding",
        loud=False,
        bug="The decoder's first input is the padding token instead of the start token bos_id.",
        symptom="Answers start with padding, and the first token is predicted from a context never seen in training.",
        paper="§3.1: the output embeddings are offset by one position, behind the start token",
        fix="Start ys with bos_id: torch.full((B, 1), bos_id).",
        edits=(Edit("ys = torch.full((src.size(0), 1), bos_id,", "ys = torch.full((src.size(0), 1), pad_id,"),),
    ),
    Pitfall(
        name="sin_and_cos_swapped",
        title="sin and cos swapped in the positional encoding",
        loud=False,
        bug="The even dimensions get cosines and the odd ones sines.",
        symptom="Nothing visible: the model trains, but the table is not the paper's.",
        paper="§3.5: PE(pos, 2i) = sin(...), PE(pos, 2i+1) = cos(...)",
        fix="Sines into pe[:, 0::2], cosines into pe[:, 1::2].",
        edits=(
            Edit("pe[:, 0::2] = torch.sin(angle)", "pe[:, 0::2] = torch.cos(angle)"),
            Edit("pe[:, 1::2] = torch.cos(angle)", "pe[:, 1::2] = torch.sin(angle)"),
        ),
    ),
    Pitfall(
        name="greedy_ignores_eos",
        title="Greedy decoding keeps writing after EOS",
        loud=False,
        bug="Sequences that have written EOS keep getting tokens instead of padding.",
        symptom="Answers carry garbage after their end token, and decoding never stops early.",
        paper="§3: the output ends with the end-of-sequence symbol",
        fix="Mask the finished sequences' next token with pad_id and stop once all are finished.",
        edits=(
            Edit("next_token = next_token.masked_fill(finished, pad_id)  # (B,)", "next_token = next_token  # (B,)"),
        ),
    ),
)


class LiveError(Exception):
    """Bad usage or a missing file: one line on stderr, exit status 2."""


# --- blanks ------------------------------------------------------------------


def blanks_of(number: int) -> list[Blank]:
    return [b for b in BLANKS if b.stage == number]


def piece_spans(source: str) -> dict[str, tuple[int, int, int]]:
    """{piece: (first body line, last line, indent)} for every function and method (lines from 1); the body
    starts after the docstring, which a blank keeps."""
    spans = {}
    for node in ast.parse(source).body:
        members = [(node.name, node)] if isinstance(node, ast.FunctionDef) else []
        if isinstance(node, ast.ClassDef):
            members = [(f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, ast.FunctionDef)]
        for name, function in members:
            body = function.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
            first = body[1] if has_doc and len(body) > 1 else body[0]
            spans[name] = (first.lineno, function.end_lineno, first.col_offset)
    return spans


def python_string(text: str) -> str:
    """text as a double-quoted Python literal (repr would pick single quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def blank_source(source: str, blanks: list[Blank]) -> str:
    """source with each blank's body replaced by raise NotImplementedError(its hint)."""
    spans = piece_spans(source)
    missing = [b.piece for b in blanks if b.piece not in spans]
    if missing:
        raise LiveError(f"{', '.join(missing)} not found in the source: update BLANKS in {PROG}")
    lines = source.splitlines(keepends=True)
    for blank in sorted(blanks, key=lambda b: spans[b.piece][0], reverse=True):
        first, last, indent = spans[blank.piece]
        hint = python_string(f"{blank.piece}: {blank.hint}")
        lines[first - 1 : last] = [f"{' ' * indent}raise NotImplementedError({hint})\n"]
    return "".join(lines)


def solution_source(stage: Stage) -> str:
    return stage.path.read_text(encoding="utf-8")


def live_path(stage: Stage, folder: Path) -> Path:
    return folder / stage.path.name


# --- checks from the tests ---------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A stage-marked test with one choice of its parameters, each given as source text."""

    stage: int
    module: str  # tests.test_components
    name: str
    id: str
    params: tuple[tuple[str, str], ...]


def _mark(decorator: ast.expr, name: str) -> ast.Call | None:
    """The call `@pytest.mark.<name>(...)`, or None."""
    if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == f"pytest.mark.{name}":
        return decorator
    return None


def _param_id(node: ast.expr, fallback: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return str(node.value)
    return fallback


def cases_in(path: Path) -> list[Case]:
    """Every stage-marked test of a test file that needs no fixture but tf, once per set of parameters."""
    text = path.read_text(encoding="utf-8")
    found = []
    for node in ast.parse(text).body:
        if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
            continue
        stage = next((m for d in node.decorator_list if (m := _mark(d, "stage"))), None)
        if stage is None:
            continue
        choices = []  # per parametrize: [(id, ((name, source), ...)), ...]
        for decorator in node.decorator_list:
            call = _mark(decorator, "parametrize")
            if call is None:
                continue
            names = [n.strip() for n in ast.literal_eval(call.args[0]).split(",")]
            values = call.args[1].elts
            ids = next((ast.literal_eval(k.value) for k in call.keywords if k.arg == "ids"), None)
            options = []
            for i, value in enumerate(values):
                parts = value.elts if len(names) > 1 else [value]
                sources = tuple((n, ast.get_source_segment(text, p)) for n, p in zip(names, parts, strict=True))
                label = ids[i] if ids else "-".join(_param_id(p, f"{n}{i}") for n, p in zip(names, parts, strict=True))
                options.append((label, sources))
            choices.append(options)
        if "pytest.raises" in ast.get_source_segment(text, node):
            continue  # input validation, not a property of the piece: make test covers it
        arguments = {a.arg for a in node.args.args}
        given = {n for options in choices for n, _ in options[0][1]} | {"tf"}
        if not arguments <= given:
            continue  # it wants a fixture of pytest's (capsys, tmp_path): not a check
        for combination in itertools.product(*choices):
            label = "-".join(c[0] for c in combination)
            params = tuple(p for c in combination for p in c[1])
            found.append(
                Case(
                    stage.args[0].value,
                    f"tests.{path.stem}",
                    node.name,
                    f"{node.name}[{label}]" if label else node.name,
                    params,
                )
            )
    return found


@cache
def all_cases() -> tuple[Case, ...]:
    return tuple(case for file in TEST_FILES for case in cases_in(REPO / "tests" / file))


def to_check(case: Case) -> Check:
    """The case as a check on the test's own function, its parameters evaluated in the test module."""
    module = importlib.import_module(case.module)
    kwargs = {name: eval(source, module.__dict__) for name, source in case.params}  # noqa: S307 - our own tests
    return Check(case.id, getattr(module, case.name), kwargs)


def load_source(source: str, name: str) -> ModuleType:
    """Import source text as a module: a stage with blanks, or with a bug planted."""
    # debug_pitfalls' loader: compiled under its own name, with tracebacks that show its lines
    return build_module(re.sub(r"[^a-z0-9_]", "_", name.lower()), source)


def pitfalls_of(number: int, source: str, pieces: set[str] | None = None) -> list[Pitfall]:
    """The registry's pitfalls and the planted bugs whose edits all fall inside what stage `number` adds (its
    section of the source), or inside the given pieces."""
    parts = split_parts(source, f"stage {number}")
    offset = len(parts.docstring)
    start = offset + section_start(parts.code, number)
    end = offset + (
        section_start(parts.code, number + 1) if section_header(parts.code, number + 1) else len(parts.code)
    )
    units = unit_of_each_line(source.splitlines())
    found = []
    for pitfall in (*PITFALLS, *PLANTED):
        places = [source.find(edit.old) for edit in pitfall.edits]
        if any(at < 0 or source.count(edit.old) != 1 for at, edit in zip(places, pitfall.edits, strict=True)):
            continue
        if pieces is None:
            inside = all(start <= at < end for at in places)
        else:
            inside = all(units[source.count("\n", 0, at)] in pieces for at in places)
        if inside:
            found.append(pitfall)
    return found


@dataclass
class StageChecks:
    """A stage's checks, which piece each check needs, and the failure each known bug gives."""

    number: int
    checks: list[Check]
    piece_of: dict[str, str]  # check id -> the piece whose blank it hit
    known: dict[str, dict[str, str]]  # the bug's words -> {check id: shape of the message it gives}
    caught_by: dict[str, list[str]]  # check id -> the bugs it catches


def bug_words(pitfall: Pitfall) -> str:
    return f"{pitfall.title}: {pitfall.fix}"


def stage_checks(number: int, with_known: bool = True) -> StageChecks:
    """The checks of stage `number`: its marked tests that fail when its pieces are blank, and what each
    known bug of those pieces makes them say."""
    stage = get_stage(number)
    source = solution_source(stage)
    blank = load_source(blank_source(source, blanks_of(number)), f"blank_{number:02d}")
    checks, piece_of = [], {}
    for case in all_cases():
        if case.stage != number:
            continue
        check = to_check(case)
        status, message = run_check(check, blank)
        if status == PASS:
            continue  # it does not need what this stage adds
        checks.append(check)
        piece_of[check.id] = message.split(":")[0] if status == BLANK else ""
    known: dict[str, dict[str, str]] = {}
    caught: dict[str, list[str]] = {}
    if with_known:
        # the bugs of what this stage adds; then, for a check none of them trips (a property this stage
        # inherits, such as finite logits for an empty source), the bugs of the stages before it
        own = pitfalls_of(number, source)
        earlier = [p for n in range(1, number) for p in pitfalls_of(n, source) if p not in own]
        for group in (own, earlier):
            wanted = [c for c in checks if c.id not in caught]
            for pitfall in group if wanted else ():
                try:
                    variant = load_source(apply_edits(source, pitfall), f"planted_{number:02d}_{pitfall.name}")
                except (PitfallDriftError, SyntaxError):
                    continue
                for check in wanted:
                    status, message = run_check(check, variant)
                    if status != PASS:
                        known.setdefault(bug_words(pitfall), {})[check.id] = shape_of(message)
                        caught.setdefault(check.id, []).append(pitfall.name)
    return StageChecks(number, checks, piece_of, known, caught)


# --- commands ----------------------------------------------------------------


def pick(number: str | None, example: str) -> Stage:
    if number is None or not str(number).strip():
        raise LiveError(f"expected a stage number, e.g. {example}; the stages are 1 to {LAST}")
    try:
        stage = get_stage(number)
    except ValueError as error:
        raise LiveError(str(error)) from None
    if stage.bonus:
        raise LiveError(f"stage {stage.number} is a bonus stage; live coding covers stages 1 to {LAST}")
    return stage


def write_live(stage: Stage, folder: Path, solution: bool = False) -> tuple[Path, Path | None]:
    """Write the live file of a stage (blank, or the solution); an earlier, different file is kept as .attempt."""
    source = solution_source(stage)
    text = source if solution else blank_source(source, blanks_of(stage.number))
    path = live_path(stage, folder)
    folder.mkdir(parents=True, exist_ok=True)
    kept = None
    if path.exists() and path.read_text(encoding="utf-8") not in (text, blank_source(source, blanks_of(stage.number))):
        kept = path.with_name(path.name + ".attempt")
        kept.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    return path, kept


def cmd_live(args, console) -> int:
    stage = pick(args.number, "make live N=4")
    path, kept = write_live(stage, args.dir, args.solution)
    shown = display(path)
    if args.solution:
        console.print(f"[green]{shown}[/]: stage {stage.number} finished, as in {display(stage.path)}")
    else:
        pieces = ", ".join(b.piece for b in blanks_of(stage.number))
        console.print(f"[bold]{shown}[/]: stage {stage.number} ({stage.title}, {stage.paper}) with blanks to write:")
        console.print(f"  {pieces}")
        console.print(f"then: [bold]make check N={stage.number}[/]   (stuck: make live N={stage.number} SOLUTION=1)")
    if kept is not None:
        console.print(f"[yellow]your earlier version is kept as {display(kept)}[/]")
    return 0


def cmd_check(args, console) -> int:
    stage = pick(args.number, "make check N=4")
    path = live_path(stage, args.dir)
    if not path.exists():
        raise LiveError(f"{display(path)} does not exist: write it first with make live N={stage.number}")
    start = time.perf_counter()
    name = f"live_{stage.number:02d}"
    sys.modules.pop(name, None)  # a fresh import: the file has changed since the last check
    try:
        module = import_file(path, name)
    except Exception as error:  # noqa: BLE001 - the reader's file: say what is wrong, in one line
        line = getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        console.print(f"[red]✗ {display(path)} does not import{where}: {type(error).__name__}: {error}[/]")
        return 1
    ok = True
    for number in range(1, stage.number + 1):
        checks = stage_checks(number, with_known=False)
        title = f"stage {number} · {get_stage(number).title}"
        ok &= report(checks.checks, module, lambda n=number: stage_checks(n).known, console, title)
    console.print(f"[dim]checked in {time.perf_counter() - start:.1f} s[/]")
    return 0 if ok else 1


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description="Live coding: a stage with blanks, and checks for it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    live = commands.add_parser("live", help="write live/NN_name.py: stage N with its new pieces blank")
    live.add_argument("number", nargs="?", metavar="N")
    live.add_argument("--solution", action="store_true", help="write the finished stage instead")
    live.set_defaults(func=cmd_live)
    check = commands.add_parser("check", help="run the checks of stages 1..N on live/NN_name.py")
    check.add_argument("number", nargs="?", metavar="N")
    check.set_defaults(func=cmd_check)
    for sub in (live, check):
        sub.add_argument("--dir", type=Path, default=REPO / "live", help="where the live files go (default: live/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the checks' models are tiny: one thread is as fast and does not fight the other core
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")  # nn.Transformer, in a check
    # rich would wrap the check lines at 80 columns when piped; a wide console keeps one line per check
    console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160)))
    try:
        return args.func(args, console)
    except LiveError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
