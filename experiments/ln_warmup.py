"""Why warm-up? Post-LN (transformer.py, the paper's) against pre-LN (bonus stage 15), measured.

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") explain the warm-up of
Eq. (3): at initialisation a post-LN Transformer's gradients are largest in the layers next to the output,
so large early steps there derail it, while a pre-LN one's are about the same in every layer and it trains
without warm-up, at larger learning rates too. This script trains both on the same code, data and initial
weights across warm-up and peak learning rate, and measures each layer's gradient at initialisation.

    python experiments/ln_warmup.py                 # the full grid: make experiment-ln
    python experiments/ln_warmup.py --steps 20 --seeds 1 --out /tmp/ln.json --figure-dir /tmp   # a quick look

What is held fixed, and why:
- The task is transformer.py's toy task (reverse 8-12 symbols from 10), the model the demo's but deeper:
  d_model 64, h 4, N 6 (the paper's depth), d_ff 256, no dropout. Both models come from the code as it is:
  transformer.Transformer and stage 15's Transformer (stages.manifest.get_stage(15).load()); with the same
  seed they start from the same weights (stage 15 only adds the two final LayerNorms, which draw nothing).
- The optimiser is plain Adam with the paper's beta_1 = 0.9, beta_2 = 0.98, eps = 1e-9 (§5.3), not the
  demo's AMSGrad (deviation 5 of transformer.py): AMSGrad's memory of the largest second moment damps
  exactly the early large steps this experiment is about.
- The learning rate (`schedule`) rises linearly over `warmup` steps (none: the peak from step 1), holds the
  peak until step HOLD = 200, then decays as 1/sqrt(step). With warmup = HOLD = 200 and the peak of Eq. (3)
  that is Eq. (3) itself: transformer.learning_rate(step, 64, 200), the demo's schedule. The peak is
  Eq. (3)'s (8.8e-3) times a factor: 1 or 2. So "no warm-up" changes only the first 200 steps.
- Each run draws its batches from its own seeded generator (same seed, same batches for every setting) and
  never trains on the held-out examples it is scored on. One thread per run, runs spread over processes.

It writes every run's loss curve and final scores to one JSON file (experiments/ln_warmup.json, committed:
the README's numbers come from it) and draws talk/figures/ln_warmup.png from it (talk/figures.py draws the
same figure from the committed JSON in `make figures`, without training).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transformer as tf  # noqa: E402
from stages.manifest import get_stage  # noqa: E402

PROG = "experiments/ln_warmup.py"
RESULTS = ROOT / "experiments" / "ln_warmup.json"
LAYOUTS = ("post-LN", "pre-LN")
HOLD = 200  # the step where the peak ends and the 1/sqrt(step) decay begins: the demo's warmup_steps
WARMUPS = (0, 50, 200)  # none, short, the full one (the demo's Eq. (3))
PEAK_FACTORS = (1.0, 2.0)  # times Eq. (3)'s peak
STEPS = 300  # the separation shows by step 100-200; 300 keeps the grid within 10 minutes on two cores
BATCH = 32  # half the demo's 64, for time
SEEDS = 2
N_VALID = 500  # held-out examples each run is scored on
BETAS, EPS = (0.9, 0.98), 1e-9  # §5.3


@dataclass(frozen=True)
class Setup:
    """Everything a run needs besides its layout, schedule and seed."""

    layers: int = 6
    d_model: int = 64
    heads: int = 4
    d_ff: int = 256
    steps: int = STEPS
    batch: int = BATCH
    n_valid: int = N_VALID

    def config(self, module) -> tf.TransformerConfig:
        vocab = tf.FIRST_SYMBOL + tf.N_SYMBOLS
        return module.TransformerConfig(
            vocab,
            vocab,
            d_model=self.d_model,
            n_heads=self.heads,
            n_layers=self.layers,
            d_ff=self.d_ff,
            dropout=0.0,
            max_len=tf.MAX_LEN + 2,
            warmup_steps=HOLD,
        )


@dataclass(frozen=True)
class Run:
    layout: str  # "post-LN" or "pre-LN"
    warmup: int  # steps of linear warm-up; 0 = none
    peak_factor: float  # the peak learning rate in units of Eq. (3)'s
    seed: int


def module_for(layout: str):
    """transformer.py (post-LN, the paper's) or bonus stage 15 (pre-LN): the code as it is, never a copy."""
    return tf if layout == "post-LN" else get_stage(15).load()


def eq3_peak(d_model: int) -> float:
    """Eq. (3)'s largest rate, reached at step HOLD: d_model^-0.5 * HOLD^-0.5."""
    return tf.learning_rate(HOLD, d_model, HOLD)


def schedule(step: int, peak: float, warmup: int, hold: int = HOLD) -> float:
    """The learning rate at step (from 1): peak * min(step / warmup, sqrt(hold / step)), the ramp left out
    when warmup = 0. warmup = hold is Eq. (3) scaled to `peak`; warmup < hold ramps, then holds the peak."""
    ramp = 1.0 if warmup == 0 else min(1.0, step / warmup)
    return peak * min(ramp, math.sqrt(hold / step))


def held_out(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n examples a run is scored on; the same for every run of a seed (a generator of their own)."""
    return tf.make_examples(
        "reverse", n, tf.N_SYMBOLS, tf.MIN_LEN, tf.MAX_LEN, torch.Generator().manual_seed(10_000 + seed)
    )


def train_run(run: Run, setup: Setup) -> dict:
    """Train one model; return its loss at every step (None once non-finite) and its held-out scores."""
    torch.set_num_threads(1)
    module = module_for(run.layout)
    torch.manual_seed(run.seed)
    model = module.Transformer(setup.config(module))
    peak = run.peak_factor * eq3_peak(setup.d_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=BETAS, eps=EPS)  # plain Adam, as §5.3
    # LambdaLR multiplies lr=1.0 by the lambda; it counts from 0, our steps from 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule(i + 1, peak, run.warmup))
    valid_src, valid_tgt = held_out(run.seed, setup.n_valid)
    excluded = {tuple(row.tolist()) for row in valid_src}
    generator = torch.Generator().manual_seed(run.seed)
    losses: list[float | None] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(setup.steps):
        src, tgt = tf.make_examples("reverse", setup.batch, tf.N_SYMBOLS, tf.MIN_LEN, tf.MAX_LEN, generator)
        fresh = torch.tensor([tuple(row.tolist()) not in excluded for row in src])  # (B,)
        loss = tf.train_step(model, src[fresh], tgt[fresh], optimizer, scheduler)
        if not math.isfinite(loss):
            break  # diverged: the weights are NaN from here on
        losses.append(round(loss, 4))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    diverged = len(losses) < setup.steps
    valid_loss = exact = None
    if not diverged:
        model.eval()
        with torch.no_grad():
            logits = model(valid_src, valid_tgt[:, :-1])  # (N, T-1, V)
            valid_loss = tf.label_smoothed_loss(logits, valid_tgt[:, 1:], 0.0, tf.PAD).item()  # cross-entropy
        _, correct = tf.exact_match(model, valid_src, valid_tgt)
        exact = correct.float().mean().item()
    return asdict(run) | {
        "peak_lr": peak,
        "loss": losses,
        "diverged_at": len(losses) + 1 if diverged else None,
        "valid_loss": None if valid_loss is None or not math.isfinite(valid_loss) else round(valid_loss, 4),
        "exact_match": exact,
        "seconds": round(seconds, 1),  # of training, wall clock: longer when other jobs share the cores
        "cpu_seconds": round(cpu_seconds, 1),  # of training, this process's CPU time: what an idle core would take
    }


def gradient_norms(setup: Setup, seed: int) -> dict[str, dict[str, list[float]]]:
    """Xiong et al.'s Figure 3 in small: |grad W_2| per layer at initialisation, both layouts on the same
    weights and batch (stage 15's gradient_norms; stage 15 adds only the two final norms)."""
    torch.set_num_threads(1)
    pre_ln = get_stage(15).load()
    torch.manual_seed(seed)
    pre = pre_ln.Transformer(setup.config(pre_ln))
    post = tf.Transformer(setup.config(tf))
    missing, unexpected = post.load_state_dict(pre.state_dict(), strict=False)
    assert not missing and all(".norm." in name for name in unexpected), (missing, unexpected)
    src, tgt = tf.make_examples(
        "reverse", setup.batch, tf.N_SYMBOLS, tf.MIN_LEN, tf.MAX_LEN, torch.Generator().manual_seed(seed)
    )
    return {"post-LN": pre_ln.gradient_norms(post, src, tgt), "pre-LN": pre_ln.gradient_norms(pre, src, tgt)}


def dumps(data: dict) -> str:
    """The results as JSON, one run a line (a run holds a loss per step), the rest indented."""
    head = json.dumps({key: value for key, value in data.items() if key != "runs"}, indent=1)
    runs = ",\n".join("  " + json.dumps(run) for run in data["runs"])
    return head[:-2] + ',\n "runs": [\n' + runs + "\n ]\n}\n"


def grid(warmups, peak_factors, seeds: int) -> list[Run]:
    return [
        Run(layout, warmup, factor, seed)
        for seed in range(seeds)
        for factor in peak_factors
        for warmup in warmups
        for layout in LAYOUTS
    ]


def run_all(runs: list[Run], setup: Setup, workers: int, on_done=None) -> list[dict]:
    """Every run, over `workers` processes (0: in this one); results in the order of `runs`."""
    if workers == 0:
        results = []
        for i, run in enumerate(runs):
            results.append(train_run(run, setup))
            if on_done is not None:
                on_done(i + 1)
        return results
    results: dict[int, dict] = {}
    # spawn, not fork: a forked child of a process that has started torch's thread pools can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_run, run, setup): i for i, run in enumerate(runs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(len(results))
    return [results[i] for i in range(len(runs))]


# -- what the runs show ------------------------------------------------------------------------------------


def outcome(result: dict, threshold: float = 1.0) -> str:
    """diverged (the loss went non-finite), learned (held-out cross-entropy below threshold nats per token;
    answering with the symbols' frequencies gives about ln 10 = 2.3), or stalled (finite, but not below it)."""
    if result["diverged_at"] is not None:
        return "diverged"
    return "learned" if result["valid_loss"] < threshold else "stalled"


def summary(results: list[dict]) -> list[dict]:
    """One row per (peak factor, warm-up, layout): the outcomes over the seeds and the median scores."""
    rows = []
    keys = sorted({(r["peak_factor"], r["warmup"], r["layout"]) for r in results}, key=lambda k: (k[0], -k[1], k[2]))
    for factor, warmup, layout in keys:
        runs = [r for r in results if (r["peak_factor"], r["warmup"], r["layout"]) == (factor, warmup, layout)]
        exact = sorted(r["exact_match"] if r["exact_match"] is not None else 0.0 for r in runs)
        finals = sorted(r["valid_loss"] if r["valid_loss"] is not None else math.inf for r in runs)
        rows.append(
            {
                "peak_factor": factor,
                "warmup": warmup,
                "layout": layout,
                "seeds": len(runs),
                "learned": sum(outcome(r) == "learned" for r in runs),
                "stalled": sum(outcome(r) == "stalled" for r in runs),
                "diverged": sum(outcome(r) == "diverged" for r in runs),
                "exact_match": [r["exact_match"] for r in runs],
                "valid_loss": [r["valid_loss"] for r in runs],
                "median_exact_match": exact[len(exact) // 2],
                "median_valid_loss": finals[len(finals) // 2],
            }
        )
    return rows


def warmup_name(warmup: int) -> str:
    return "none" if warmup == 0 else f"{warmup} steps"


def print_summary(console: Console, data: dict) -> None:
    table = Table(title=f"held-out exact match after {data['setup']['steps']} steps, seeds 0-{data['seeds'] - 1}")
    for column in (
        "peak lr",
        "warm-up",
        "layout",
        "learned / stalled / diverged",
        "exact match per seed",
        "valid CE per seed",
    ):
        table.add_column(column, justify="right")
    for row in summary(data["runs"]):
        peak = row["peak_factor"] * data["eq3_peak"]
        per_seed = " ".join("—" if e is None else f"{100 * e:.1f}%" for e in row["exact_match"])
        table.add_row(
            f"{row['peak_factor']:g}x ({peak:.1e})",
            warmup_name(row["warmup"]),
            row["layout"],
            f"{row['learned']} / {row['stalled']} / {row['diverged']}",
            per_seed,
            " ".join("NaN" if v is None else f"{v:.2f}" for v in row["valid_loss"]),
        )
    console.print(table)
    grads = data["gradients"]
    table = Table(title="|grad W_2| per layer at initialisation, mean over the seeds (one batch each)")
    table.add_column("layer")
    for layout in LAYOUTS:
        table.add_column(layout, justify="right")
    for stack in ("encoder", "decoder"):
        for i in range(data["setup"]["layers"]):
            table.add_row(f"{stack} {i + 1}", *(f"{mean_gradient(grads, layout, stack)[i]:.3f}" for layout in LAYOUTS))
    console.print(table)


def mean_gradient(gradients: list[dict], layout: str, stack: str) -> list[float]:
    """The per-layer gradient norms of one layout and stack, averaged over the seeds."""
    per_seed = [g[layout][stack] for g in gradients]
    return [sum(values) / len(values) for values in zip(*per_seed, strict=True)]


README_START, README_END = "<!-- ln-warmup:start -->", "<!-- ln-warmup:end -->"


def percent(value: float | None) -> str:
    return "NaN" if value is None else f"{100 * value:.1f}%"


def readme_block(data: dict) -> str:
    """The README's measured tables, between the markers, generated from a results file."""
    rows = summary(data["runs"])
    seeds = f"seeds 0-{data['seeds'] - 1}" if data["seeds"] > 1 else "seed 0"
    lines = [
        README_START,
        "<!-- generated from experiments/ln_warmup.json by `python experiments/ln_warmup.py --readme`; do not edit -->",
        f"| peak lr | warm-up | post-LN: exact match ({seeds}) | post-LN: valid CE | "
        f"pre-LN: exact match ({seeds}) | pre-LN: valid CE |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for factor in data["peak_factors"]:
        for warmup in data["warmups"]:
            cells = [f"{factor:g}x ({factor * data['eq3_peak']:.1e})", warmup_name(warmup)]
            for layout in LAYOUTS:
                row = next(r for r in rows if (r["peak_factor"], r["warmup"], r["layout"]) == (factor, warmup, layout))
                cells.append(", ".join(percent(e) for e in row["exact_match"]))
                cells.append(", ".join("NaN" if v is None else f"{v:.2f}" for v in row["valid_loss"]))
            lines.append("| " + " | ".join(cells) + " |")
    n = data["setup"]["layers"]
    lines += [
        "",
        "| &#124;grad W<sub>2</sub>&#124; at initialisation | " + " | ".join(f"layer {i + 1}" for i in range(n)) + " |",
        "|---|" + "---:|" * n,
    ]
    for stack in ("encoder", "decoder"):
        for layout in LAYOUTS:
            values = mean_gradient(data["gradients"], layout, stack)
            lines.append(f"| {layout} {stack} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    lines.append(README_END)
    return "\n".join(lines)


def with_readme_block(readme: str, block: str) -> str:
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {README_START} ... {README_END} block")
    return readme[:start] + block + readme[end + len(README_END) :]


# -- command line ------------------------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def factor_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(0 < v < 1000 for v in values):
        raise argparse.ArgumentTypeError(f"expected factors in (0, 1000), got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = tf.OneLineParser(prog=PROG, description="Post-LN against pre-LN across warm-up and peak learning rate.")
    parser.add_argument("--steps", type=tf.positive_int, default=STEPS, help=f"steps per run (default: {STEPS})")
    parser.add_argument("--seeds", type=tf.positive_int, default=SEEDS, help=f"seeds 0..n-1 (default: {SEEDS})")
    parser.add_argument("--layers", type=tf.positive_int, default=6, help="N, layers per stack (default: 6)")
    parser.add_argument("--batch", type=tf.positive_int, default=BATCH, help=f"sequences per step (default: {BATCH})")
    parser.add_argument("--valid", type=tf.positive_int, default=N_VALID, help=f"held-out examples ({N_VALID})")
    parser.add_argument("--warmups", type=int_list, default=WARMUPS, help="warm-up steps, 0 = none (default: 0,50,200)")
    parser.add_argument("--peaks", type=factor_list, default=PEAK_FACTORS, help="peak lr / Eq. (3)'s (default: 1,2)")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes, one thread each (default: 2)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="the JSON results (default: experiments/ln_warmup.json)"
    )
    parser.add_argument(
        "--figure-dir", type=Path, default=None, help="where ln_warmup.png goes (default: talk/figures)"
    )
    parser.add_argument("--no-figure", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--readme", action="store_true", help="train nothing: rewrite README.md's tables from the --out results"
    )
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if any(w > HOLD for w in args.warmups):
        parser.error(f"--warmups must be at most {HOLD} (where the decay begins), got {args.warmups}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if args.readme:
        try:
            block = readme_block(json.loads(args.out.read_text(encoding="utf-8")))
            readme = ROOT / "README.md"
            readme.write_text(with_readme_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")
        except (OSError, ValueError, KeyError) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
        console.print(f"README.md's ln-warmup tables rewritten from {args.out}")
        return 0
    setup = Setup(layers=args.layers, steps=args.steps, batch=args.batch, n_valid=args.valid)
    runs = grid(args.warmups, args.peaks, args.seeds)
    console.print(
        f"{len(runs)} runs: {' and '.join(LAYOUTS)}, warm-up {', '.join(map(warmup_name, args.warmups))}, "
        f"peak {', '.join(f'{f:g}x' for f in args.peaks)} Eq. (3)'s {eq3_peak(setup.d_model):.1e}, seeds 0-{args.seeds - 1}; "
        f"N={setup.layers}, d_model {setup.d_model}, {setup.steps} steps of batch {setup.batch}, {args.workers} processes"
    )
    start = time.perf_counter()
    gradients = [gradient_norms(setup, seed) for seed in range(args.seeds)]
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with progress:
        bar = progress.add_task("runs", total=len(runs))
        results = run_all(runs, setup, args.workers, on_done=lambda done: progress.update(bar, completed=done))
    wall = time.perf_counter() - start
    data = {
        "command": "python " + " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]),
        "setup": asdict(setup),
        "seeds": args.seeds,
        "warmups": list(args.warmups),
        "peak_factors": list(args.peaks),
        "hold": HOLD,
        "eq3_peak": eq3_peak(setup.d_model),
        "optimizer": f"Adam, betas {BETAS}, eps {EPS} (plain, not AMSGrad)",
        "task": f"reverse {tf.MIN_LEN}-{tf.MAX_LEN} symbols from {tf.N_SYMBOLS}",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "workers": args.workers,
            "threads_per_run": 1,
            "load_average_at_end": list(os.getloadavg()),
        },
        "wall_seconds": round(wall, 1),
        "gradients": gradients,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(data), encoding="utf-8")
    print_summary(console, data)
    console.print(f"{len(runs)} runs in {wall:.0f} s; results in {args.out}")
    if not args.no_figure:
        from talk.figures import draw_ln_warmup_file

        figure = draw_ln_warmup_file(args.out, args.figure_dir)
        console.print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
