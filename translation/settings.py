"""Every command's settings: one object, built once from the command line, every range checked here.

Each setting is a dataclass field that carries its flag, its help and its check; the command line is built from
those fields, so a flag, its default and its check cannot drift apart. A setting remembers whether it was given on
the command line (`given`), which is what a resume needs: the training settings are stored whole in every
checkpoint, and a resume takes the stored value of every setting that shapes the run, refuses a given one that
differs (naming the flag and both values), and takes the rest (--threads, --quiet, ...) from the new command line.

    TrainSettings       translate.py train          DecodeSettings   evaluate, translate
    AverageSettings     translate.py average        FetchSettings    fetch
    ExportSettings      translate.py export-web
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from transformer import OneLineParser
from translation.batches import POOL, POOL_NUMBERS, PRE_TOKENIZERS
from translation.corpora import UserError, check_data_flags
from translation.precision import PRECISIONS

PROG = "translate.py"
DEVICES = ("auto", "cpu", "cuda", "mps")

# How a setting behaves on --resume. SHAPES: it made the run (data, vocabulary, model, schedule, batches); the stored
# value stands, and a different one given is refused. FREE: how this process runs (threads, logging, saving); the new
# command line's value is taken.
SHAPES, FREE = "shapes the run", "free"


# -----------------------------------------------------------------------------
# Checks: each takes a value and says what was expected, or nothing
# -----------------------------------------------------------------------------


def at_least(minimum: int):
    def check(value) -> str | None:
        return None if value >= minimum else f"an integer >= {minimum}"

    return check


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "a number in [0, 1)"


def finite_positive(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "a finite number > 0"


def finite_non_negative(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "a finite number >= 0"


def setting(default, flag: str | None = None, help: str = "", *, check=None, kind=FREE, **argparse_options):
    """A dataclass field that knows its command-line flag (None: not a flag), its help and its check."""
    metadata = {"flag": flag, "help": help, "check": check, "kind": kind, "argparse": argparse_options}
    return field(default=default, metadata=metadata)


# -----------------------------------------------------------------------------
# Paths: an output is checked before any work, not after an hour of it
# -----------------------------------------------------------------------------


def writable_dir(path: str, flag: str) -> None:
    """A folder we may create or write into: not a file, and its nearest existing parent a writable folder."""
    here = Path(path)
    if here.exists() and not here.is_dir():
        raise UserError(f"{flag} {path}: expected a folder, found a file")
    while not here.exists():
        here = here.parent
    if not here.is_dir() or not can_write_in(here):
        raise UserError(f"{flag} {path}: {here} cannot be written")


def writable_file(path: str, flag: str) -> None:
    """A file we may write: not a folder, and in a folder that exists and can be written."""
    here = Path(path)
    if here.is_dir():
        raise UserError(f"{flag} {path}: expected a file name, found a folder")
    parent = here.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: no such folder {parent}")
    if not can_write_in(parent) or (here.exists() and not os.access(here, os.W_OK)):
        raise UserError(f"{flag} {path}: cannot be written")


def can_write_in(folder: Path) -> bool:
    """Tried, not asked: os.access says yes to root on a read-only file system, or in /proc."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# -----------------------------------------------------------------------------
# The settings of each command
# -----------------------------------------------------------------------------


class Settings:
    """What every command's settings share: built from argparse's namespace, checked once, `given` remembered."""

    given: frozenset[str]

    def __post_init__(self) -> None:
        for f in fields(self):
            value, check = getattr(self, f.name), f.metadata.get("check")
            if check is None or value is None:
                continue
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if (expected := check(item)) is not None:
                    raise UserError(f"{flag_of(f)}: expected {expected}, got {item!r}")
        self.check()

    def check(self) -> None:
        """Checks that need more than one setting, or the file system."""

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace, preset: dict | None = None):
        given = vars(namespace)
        return cls(**((preset or {}) | given), given=frozenset(given) | frozenset(preset or {}))


def flag_of(f) -> str:
    return f.metadata.get("flag") or f.name


@dataclass(frozen=True)
class TrainSettings(Settings):
    out: str = setting(
        MISSING, "--out", "where the checkpoints, tokenizer and metrics go", metavar="RUN_DIR", required=True
    )
    # the data
    data: str | None = setting(None, "--data", "training data: source<TAB>target per line", kind=SHAPES)
    src: str | None = setting(None, "--src", "training data: source sentences, one per line", kind=SHAPES)
    tgt: str | None = setting(None, "--tgt", "training data: their translations, line by line", kind=SHAPES)
    valid: tuple[str, ...] | None = setting(
        None,
        "--valid",
        "validation pairs as FILE.tsv or SRC_FILE TGT_FILE (default: 1%% of the data, held out by hash)",
        kind=SHAPES,
        nargs="+",
        metavar="FILE",
    )
    test: tuple[str, ...] | None = setting(
        None, "--test", "test pairs, as --valid takes them", kind=SHAPES, nargs="+", metavar="FILE"
    )
    task: str = setting(
        "numbers",
        "--task",
        "the built-in task: German -> English numbers (default), or English -> German (score it by chrF)",
        kind=SHAPES,
        choices=("numbers", "numbers-en-de"),
    )
    numbers: int = setting(50_000, "--numbers", "training pairs of the numbers task", check=at_least(1), kind=SHAPES)
    vocab_size: int = setting(300, "--vocab-size", "shared BPE vocabulary (300)", check=at_least(5), kind=SHAPES)
    bpe_pairs: int = setting(10_000, "--bpe-pairs", "pairs the BPE learns from (10000)", check=at_least(1), kind=SHAPES)
    pre_tokenizer: str = setting(
        "punctuation",
        "--pre-tokenizer",
        "where BPE's words end: at spaces and punctuation (default), or at spaces only",
        kind=SHAPES,
        choices=PRE_TOKENIZERS,
    )
    # the model (None: the preset's, or the CPU-sized default below)
    preset: str | None = setting(None, "--preset", "Table 3's base or big model", kind=SHAPES, choices=("base", "big"))
    d_model: int | None = setting(None, "--d-model", "d_model", check=at_least(2), kind=SHAPES)
    n_heads: int | None = setting(None, "--heads", "h, the attention heads", check=at_least(1), kind=SHAPES)
    n_layers: int | None = setting(
        None, "--layers", "N, layers of the encoder and of the decoder", check=at_least(1), kind=SHAPES
    )
    d_ff: int | None = setting(
        None, "--d-ff", "inner width of the feed-forward network", check=at_least(1), kind=SHAPES
    )
    dropout: float | None = setting(None, "--dropout", "P_drop", check=fraction, kind=SHAPES)
    label_smoothing: float | None = setting(None, "--label-smoothing", "eps_ls (0.1)", check=fraction, kind=SHAPES)
    max_len: int = setting(128, "--max-len", "longest sentence in tokens (128)", check=at_least(2), kind=SHAPES)
    # the schedule
    warmup_steps: int | None = setting(None, "--warmup", "warm-up steps of Eq. (3)", check=at_least(1), kind=SHAPES)
    lr_factor: float = setting(
        1.0, "--lr-factor", "multiplies Eq. (3)'s rate (1, the paper's schedule)", check=finite_positive, kind=SHAPES
    )
    cooldown: float = setting(
        0.0,
        "--cooldown",
        "fraction of the steps over which the rate falls linearly to 0 at the end (0: Eq. (3) alone)",
        check=fraction,
        kind=SHAPES,
    )
    steps: int = setting(700, "--steps", "steps to reach (700); a resume may raise it", check=at_least(1))
    # the batches
    batch_tokens: int = setting(
        600, "--batch-tokens", "token budget of a global batch (600)", check=at_least(1), kind=SHAPES
    )
    pool: int | None = setting(
        None,
        "--pool",
        f"batches' worth of sentences sorted by length together ({POOL}; the numbers task {POOL_NUMBERS})",
        check=at_least(1),
        kind=SHAPES,
    )
    seed: int = setting(0, "--seed", "seeds the weights, the batches and dropout (0)", kind=SHAPES)
    dtype: str = setting("float32", "--dtype", argparse.SUPPRESS, kind=SHAPES, choices=("float32", "float64"))
    # how this process runs: a resume takes these from its own command line
    device: str = setting("cpu", "--device", "cpu (default), cuda, mps or auto", choices=DEVICES)
    threads: int | None = setting(None, "--threads", "CPU threads per process (default: torch's)", check=at_least(1))
    precision: str = setting(
        "auto",
        "--precision",
        "bf16 trains under bfloat16 autocast, the weights in float32; auto (default) takes it only where the "
        "processor computes bfloat16 natively",
        choices=PRECISIONS,
    )
    resume: bool = setting(False, "--resume", "continue from the latest checkpoint in RUN_DIR", action="store_true")
    quiet: bool = setting(False, "--quiet", "print errors only", action="store_true")
    keep: int = setting(5, "--keep", "checkpoints kept (5)", check=at_least(1))
    save_every: int = setting(0, "--save-every", "steps between checkpoints (0: at the end only)", check=at_least(0))
    eval_every: int = setting(
        250, "--eval-every", "steps between validations (250; 0: at the end only)", check=at_least(0)
    )
    log_every: int = setting(10, "--log-every", "steps between lines of metrics.jsonl (10)", check=at_least(1))
    recipe: str | None = setting(None, "--recipe", "a named set of settings; flags given beside it win", choices=())
    given: frozenset[str] = frozenset()

    def check(self) -> None:
        writable_dir(self.out, "--out")
        check_data_flags(self.data, self.src, self.tgt, "the training data")
        for name in ("valid", "test"):
            files = getattr(self, name)
            if files and len(files) > 2:
                raise UserError(f"--{name} takes FILE.tsv or SRC_FILE TGT_FILE, got {len(files)} files")
            if files and not (self.data or self.src):
                raise UserError("--valid and --test go with your own data (--data, or --src and --tgt)")
        if self.precision == "bf16" and self.dtype != "float32":
            raise UserError(f"--precision bf16 trains float32 weights under autocast, not {self.dtype}")

    @property
    def own_data(self) -> bool:
        return bool(self.data or self.src)

    def resolved(self) -> TrainSettings:
        """The defaults that depend on other settings, filled in: the model's sizes from --preset (or the CPU-sized
        defaults), the pool from the kind of data."""
        # CPU-sized defaults. Warm-up 400 peaks at a learning rate of 6.3e-3: with 200 (8.8e-3) the numbers task
        # ended between 97.8% and 99.4% exact match over three seeds after 500 steps, with 400 between 99.3% and 99.9%
        sizes = {"d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256, "dropout": 0.0, "warmup_steps": 400}
        if self.preset == "base":
            sizes = {"d_model": 512, "n_heads": 8, "n_layers": 6, "d_ff": 2048, "dropout": 0.1, "warmup_steps": 4000}
        elif self.preset == "big":
            sizes = {"d_model": 1024, "n_heads": 16, "n_layers": 6, "d_ff": 4096, "dropout": 0.3, "warmup_steps": 4000}
        filled = {k: v for k, v in sizes.items() if getattr(self, k) is None}
        if self.label_smoothing is None:
            filled["label_smoothing"] = 0.1
        if self.pool is None:
            filled["pool"] = POOL if self.own_data else POOL_NUMBERS
        return replace(self, **filled)

    MODEL = ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "max_len", "label_smoothing", "warmup_steps")

    def model_config(self) -> dict:
        """The TransformerConfig fields these settings give (vocabulary sizes aside)."""
        return {name: getattr(self, name) for name in self.MODEL} | {"lr_factor": self.lr_factor}

    def stored(self) -> dict:
        """What a checkpoint keeps of them: every setting, resolved (the given set is this command line's)."""
        return {k: v for k, v in asdict(self).items() if k != "given"}

    def resumed(self, stored: dict, where: Path) -> TrainSettings:
        """These settings for a resume of a run whose checkpoint holds `stored`: every setting that shapes the run
        takes its stored value; one given here that differs is refused. Free settings keep this command's value."""
        kept = {}
        for f in fields(self):
            if f.name not in stored or f.name == "given":
                continue
            mine, theirs = getattr(self, f.name), stored[f.name]
            if isinstance(theirs, list):
                theirs = tuple(theirs)
            changes_schedule = f.name == "steps" and stored.get("cooldown", 0) > 0
            if f.metadata["kind"] == SHAPES or changes_schedule:
                if f.name in self.given and mine != theirs:
                    why = " (the cooldown is laid out over the run's steps)" if changes_schedule else ""
                    raise UserError(f"{where} was trained with {flag_of(f)} {shown(theirs)}, not {shown(mine)}{why}")
                kept[f.name] = theirs
        return replace(self, **kept)


def stored_settings(meta: dict) -> dict:
    """The settings a checkpoint was trained with; older checkpoints kept only some of them."""
    if "settings" in meta:
        return meta["settings"]
    legacy = {k: meta["config"][k] for k in (*TrainSettings.MODEL, "lr_factor") if k in meta["config"]}
    # 8: the pool of checkpoints written before --pool existed
    return legacy | {
        "seed": meta["seed"],
        "dtype": meta["dtype"],
        "batch_tokens": meta.get("batch_tokens"),
        "pool": meta.get("pool", 8),
    }


def shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "(none)" if value is None else str(value)


@dataclass(frozen=True)
class DecodeSettings(Settings):
    run: str = setting(MISSING, "run", "a run directory (its latest checkpoint) or a checkpoint file", metavar="RUN")
    text: tuple[str, ...] = setting((), "text", "sentences (default: one per line on stdin)", nargs="*")
    data: str | None = setting(None, "--data", "test data: source<TAB>target per line")
    src: str | None = setting(None, "--src", "test data: source sentences, one per line (with --tgt)")
    tgt: str | None = setting(None, "--tgt", "test data: their translations, line by line")
    beam: int = setting(4, "--beam", "beam size; 1 decodes greedily (4)", check=at_least(1))
    alpha: float = setting(0.6, "--alpha", "length penalty alpha of §6.1 (0.6)", check=finite_non_negative)
    threads: int | None = setting(None, "--threads", "CPU threads (default: torch's)", check=at_least(1))
    precision: str = setting(
        "auto", "--precision", "bf16 decodes under bfloat16 autocast; auto: float32 on a CPU", choices=PRECISIONS
    )
    device: str = setting("cpu", "--device", "cpu (default), cuda, mps or auto", choices=DEVICES)
    examples: int = setting(8, "--examples", "examples to show (8)", check=at_least(0))
    json: str | None = setting(None, "--json", "also write the scores as JSON to FILE", metavar="FILE")
    title: str | None = setting(None, "--title", "what the last line starts with, e.g. the test set's name")
    plot: str | None = setting(None, "--plot", "draw the cross-attention of the first sentence", metavar="FILE.png")
    given: frozenset[str] = frozenset()

    def check(self) -> None:
        check_data_flags(self.data, self.src, self.tgt, "the test data")
        if self.json:
            writable_file(self.json, "--json")
        if self.plot:
            writable_file(self.plot, "--plot")


@dataclass(frozen=True)
class AverageSettings(Settings):
    run: str = setting(MISSING, "run", "the run directory whose checkpoints are averaged", metavar="RUN_DIR")
    out: str = setting(MISSING, "--out", "the averaged checkpoint", metavar="FILE", required=True)
    last: int = setting(5, "--last", "how many of the latest checkpoints (5)", check=at_least(1))
    given: frozenset[str] = frozenset()

    def check(self) -> None:
        writable_file(self.out, "--out")
        if Path(self.out).resolve().parent == (Path(self.run) / "checkpoints").resolve():
            raise UserError(f"--out {self.out}: write the average beside the run's checkpoints, not among them")


@dataclass(frozen=True)
class FetchSettings(Settings):
    dataset: str = setting(MISSING, "dataset", "Multi30k task 1, German-English", choices=("multi30k",))
    out: str = setting("data/multi30k", "--out", "where the files go (data/multi30k)", metavar="DIR")
    source: str | None = setting(
        None, "--from", "a folder holding the .gz files, or a mirror's base URL", metavar="DIR_OR_URL"
    )
    given: frozenset[str] = frozenset()

    def check(self) -> None:
        writable_dir(self.out, "--out")


@dataclass(frozen=True)
class ExportSettings(Settings):
    run: str = setting(MISSING, "run", "a run directory (its averaged.pt, else its latest checkpoint) or a checkpoint")
    out: str = setting("web", "--out", "the folder the page goes to (web)", metavar="DIR")
    half: bool = setting(False, "--half", "store the weights as float16: half the size", action="store_true")
    given: frozenset[str] = frozenset()

    def check(self) -> None:
        writable_dir(self.out, "--out")


COMMANDS = {
    "train": (TrainSettings, "train a model (the numbers task unless --data or --src/--tgt)"),
    "evaluate": (DecodeSettings, "BLEU, chrF and exact match on the held-out test split or your file"),
    "translate": (DecodeSettings, "translate sentences given as arguments or on stdin"),
    "average": (AverageSettings, "average the weights of the last K checkpoints (§6.1)"),
    "fetch": (FetchSettings, "download a data set, checked against pinned SHA-256 sums"),
    "export-web": (ExportSettings, "write a page that runs the model in a browser, offline"),
}
ONLY = {"evaluate": {"text", "plot"}, "translate": {"data", "src", "tgt", "examples", "json", "title"}}  # not theirs


# -----------------------------------------------------------------------------
# The command line, built from the fields
# -----------------------------------------------------------------------------


def parse_value(kind: type):
    """argparse's type: the text as an int or a float (ranges are the settings' checks), or as it is."""
    if kind not in (int, float):
        return None

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


def command_parser(name: str, recipes: dict) -> OneLineParser:
    cls, help = COMMANDS[name]
    parser = OneLineParser(prog=f"{PROG} {name}", description=help)
    for f in fields(cls):
        flag = f.metadata.get("flag")
        if flag is None or f.name in ONLY.get(name, ()):
            continue
        options = dict(f.metadata["argparse"])
        if "action" not in options:
            base = f.type.split(" ")[0].removeprefix("tuple[").removesuffix(",")
            options.setdefault("type", parse_value({"int": int, "float": float}.get(base, str)))
            if options["type"] is None:
                del options["type"]
        if f.name == "recipe":
            options["choices"] = tuple(recipes)
        if flag.startswith("--"):
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"], **options)
        else:
            if f.default is not MISSING:  # an optional positional: the sentences to translate
                options.setdefault("default", argparse.SUPPRESS)
            parser.add_argument(f.name, help=f.metadata["help"], **options)
    return parser


def parse_command_line(argv: list[str], recipes: dict):
    """(the command's name, its settings). Flags and the sentences to translate may come in any order."""
    top = OneLineParser(prog=PROG, description="Train, evaluate and use a Transformer on parallel text.")
    top.add_argument("command", choices=tuple(COMMANDS), help=", ".join(COMMANDS))
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # -h, nothing, or an unknown command: argparse says so and exits
    name = argv[0]
    namespace = command_parser(name, recipes).parse_intermixed_args(argv[1:])
    for key in ("text", "valid", "test"):
        if key in vars(namespace):
            setattr(namespace, key, tuple(getattr(namespace, key)))
    cls = COMMANDS[name][0]
    preset = recipes[namespace.recipe] if getattr(namespace, "recipe", None) else None
    return name, cls.from_namespace(namespace, preset)
