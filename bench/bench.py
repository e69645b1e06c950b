"""`make bench`: how far is our from-scratch Transformer from what PyTorch ships, measured side by side.

One run, on this machine, measures:
1. a training step (forward, backward, Adam) and an inference forward of our Transformer, of the
   fused-attention stage (stages/bonus/13) and of `torch.nn.Transformer` holding the same weights
   (bench/torch_reference.py), at the demo's size and at the paper's base size;
2. hand-written attention (Eq. (1)) against `F.scaled_dot_product_attention` over sequence lengths;
3. greedy decoding with and without the key/value cache of stages/bonus/14;
4. the demo's training time to 99% exact match on its held-out examples;
5. at the Multi30k size, translate.py's training step in float32 and in bfloat16 (autocast), ours against
   `nn.Transformer` with the same weights, as GFLOP/s against the matmul peak measured in the same run.

Every timing is a median over repeats after warm-up; the candidates of one measurement take turns,
repeat after repeat, so a slow spell of the machine hits them alike. It prints rich tables and
writes the numbers as JSON (with the machine, the torch version and the thread count) and a figure,
time against sequence length, to bench/results/.

    python bench/bench.py            # the full run, about a minute on two CPU cores
    python bench/bench.py --quick    # tiny sizes, one repeat: a smoke test in seconds
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import functools
import inspect
import json
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transformer as tf  # noqa: E402
import translate  # noqa: E402
from bench.torch_reference import TorchReference  # noqa: E402
from stages.manifest import get_stage  # noqa: E402

PROG = "bench/bench.py"
RESULTS = ROOT / "bench" / "results"
TALK_FIGURE = ROOT / "talk" / "figures" / "bench_attention.png"
# nn.Transformer's inference fast path packs padded batches into nested tensors and warns each time
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures. FULL is `make bench`; QUICK is the smoke test."""

    quick: bool
    warmup: int  # untimed calls before the timed ones
    repeats: int  # timed calls per candidate; the median is reported
    model_sizes: tuple[tuple[str, dict, int, int], ...]  # (name, config overrides, batch, length)
    attention_lengths: tuple[int, ...]
    attention_batch: int
    decode_lengths: tuple[int, ...]
    decode_config: dict
    decode_batch: int
    decode_src_len: int
    demo_max_steps: int | None  # None: the demo's own default number of steps
    demo_eval_every: int
    demo_eval_examples: int | None  # None: all of the demo's held-out examples
    demo_batch_size: int | None  # None: the demo's own batch size
    figure_dpi: int
    precision_size: tuple[dict, int, int]  # (config overrides, batch, length) of the float32 / bfloat16 rows
    matmul_n: int  # the peak: an n x n matmul


VOCAB = 1000  # small, so that the embeddings and output projection, ours on both sides, do not dominate
FULL = Plan(
    quick=False,
    warmup=1,
    repeats=5,
    model_sizes=(
        ("demo", {}, 64, tf.MAX_LEN),  # demo_config(), on the demo's own batches
        ("base", {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB}, 16, 32),  # Table 3, base
    ),
    attention_lengths=(64, 128, 256, 512, 1024),
    attention_batch=2,
    decode_lengths=(16, 64, 256),
    decode_config=dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=256, n_heads=4, n_layers=2, d_ff=1024),
    decode_batch=4,
    decode_src_len=32,
    demo_max_steps=None,
    demo_eval_every=100,
    demo_eval_examples=None,
    demo_batch_size=None,
    figure_dpi=150,
    # Multi30k's size: a shared vocabulary of 8000, 128 sentences of 18 tokens, no padding
    precision_size=(
        dict(src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=8, n_layers=3, d_ff=512, max_len=128),
        128,
        18,
    ),
    matmul_n=2048,
)
QUICK = Plan(
    quick=True,
    warmup=1,
    repeats=1,
    model_sizes=(
        ("demo", {}, 4, tf.MAX_LEN),
        (
            "tiny",
            {"src_vocab_size": 50, "tgt_vocab_size": 50, "d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
            2,
            8,
        ),
    ),
    attention_lengths=(16, 32),
    attention_batch=1,
    decode_lengths=(4, 8),
    decode_config=dict(src_vocab_size=50, tgt_vocab_size=50, d_model=32, n_heads=2, n_layers=1, d_ff=64),
    decode_batch=2,
    decode_src_len=6,
    demo_max_steps=10,
    demo_eval_every=5,
    demo_eval_examples=20,
    demo_batch_size=8,
    figure_dpi=50,
    precision_size=(
        dict(src_vocab_size=50, tgt_vocab_size=50, d_model=32, n_heads=2, n_layers=1, d_ff=64, max_len=16),
        4,
        8,
    ),
    matmul_n=64,
)


# --- timing ------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def take_turns(
    candidates: dict[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each candidate. The candidates take turns, in alternating order, so that
    a slow spell of a shared machine falls on all of them rather than on one."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            synchronize(device)
            start = time.perf_counter()
            candidates[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> dict:
    """Medians of the timings, and each ratio named in ratios as (numerator, denominator)."""
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "times_s": times,
        "median_s": median,
        "ratio": {label: median[a] / median[b] for label, (a, b) in ratios.items()},
    }


# --- the candidates ----------------------------------------------------------


def fused_twin(model: tf.Transformer, fused_module: ModuleType) -> torch.nn.Module:
    """The fused-attention stage's Transformer with a copy of model's weights."""
    config = fused_module.TransformerConfig(**dataclasses.asdict(model.config))
    twin = fused_module.Transformer(config).to(next(model.parameters()).device)
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)


def model_batch(name: str, config: tf.TransformerConfig, batch: int, length: int, seed: int, device):
    """The demo's own batches (reverse task, padded) for the demo size; full-length random tokens otherwise."""
    generator = torch.Generator().manual_seed(seed)
    if name == "demo":
        src, tgt = tf.make_examples("reverse", batch, tf.N_SYMBOLS, tf.MIN_LEN, length, generator)
    else:
        src = torch.randint(tf.FIRST_SYMBOL, config.src_vocab_size, (batch, length), generator=generator)
        tgt = torch.randint(tf.FIRST_SYMBOL, config.tgt_vocab_size, (batch, length + 1), generator=generator)
        tgt[:, 0] = tf.BOS
    return src.to(device), tgt.to(device)


def measure_models(plan: Plan, device: torch.device, advance: Callable[[], None]) -> list[dict]:
    """Training step and inference forward: ours, the fused stage, nn.Transformer, same weights and data."""
    fused_module = get_stage(13).load()
    records = []
    for name, overrides, batch, length in plan.model_sizes:
        if name == "demo":
            config = tf.demo_config()
        else:
            vocab = (overrides["src_vocab_size"], overrides["tgt_vocab_size"])
            rest = {k: v for k, v in overrides.items() if k not in ("src_vocab_size", "tgt_vocab_size")}
            config = tf.TransformerConfig.paper_base(*vocab, **rest)
        torch.manual_seed(0)
        ours = tf.Transformer(config).to(device)
        candidates = {"ours": ours, "fused": fused_twin(ours, fused_module), "torch": TorchReference(ours)}
        src, tgt = model_batch(name, config, batch, length, seed=0, device=device)
        n_tokens = int((src != config.pad_id).sum() + (tgt[:, 1:] != config.pad_id).sum())
        setting = {
            "size": name,
            "config": dataclasses.asdict(config),
            "batch": batch,
            "src_len": src.size(1),
            "tgt_len": tgt.size(1) - 1,  # the decoder reads tgt[:, :-1]
            "tokens": n_tokens,  # real (non-padding) source and target tokens per step
            "parameters": sum(p.numel() for p in ours.parameters()),
            "device": device.type,
            "dtype": "float32",
        }

        # inference: eval mode, no autograd; nn.Transformer takes its fast path here
        for model in candidates.values():
            model.eval()
        with torch.no_grad():
            logits = {label: model(src, tgt[:, :-1]) for label, model in candidates.items()}
            real = (tgt[:, :-1] != config.pad_id)[..., None]  # padding rows of the logits are never used
            diff = {label: ((logits[label] - logits["ours"]) * real).abs().max().item() for label in ("fused", "torch")}
            times = take_turns(
                {label: functools.partial(model, src, tgt[:, :-1]) for label, model in candidates.items()},
                plan.warmup,
                plan.repeats,
                device,
            )
        record = setting | {"mode": "inference", "max_abs_logit_diff_vs_ours": diff}
        record |= summarise(times, {"ours/torch": ("ours", "torch"), "fused/torch": ("fused", "torch")})
        record["tokens_per_s"] = {label: n_tokens / t for label, t in record["median_s"].items()}
        records.append(record)
        advance()

        # training: transformer.train_step on each, its own Adam and schedule (make_optimizer)
        steps = {}
        for label, model in candidates.items():
            optimizer, scheduler = tf.make_optimizer(model, config)
            steps[label] = functools.partial(tf.train_step, model, src, tgt, optimizer, scheduler)
        times = take_turns(steps, plan.warmup + 1, plan.repeats, device)  # + 1: Adam allocates its state
        record = setting | {"mode": "train"}
        record |= summarise(times, {"ours/torch": ("ours", "torch"), "fused/torch": ("fused", "torch")})
        record["tokens_per_s"] = {label: n_tokens / t for label, t in record["median_s"].items()}
        records.append(record)
        advance()
    return records


def measure_attention(plan: Plan, device: torch.device, advance: Callable[[], None]) -> list[dict]:
    """Eq. (1) alone, forward, at the paper's h = 8 and d_k = 64: hand-written against the fused kernel."""
    records = []
    B, H, d_k = plan.attention_batch, 8, 64
    generator = torch.Generator().manual_seed(0)
    for length in plan.attention_lengths:
        q, k, v = (torch.randn(B, H, length, d_k, generator=generator).to(device) for _ in range(3))
        keep = torch.ones(B, length, dtype=torch.bool, device=device)  # (B, L)
        keep[1:, length * 3 // 4 :] = False  # later sequences end in padding
        masks = {
            "padding": keep[:, None, None, :],  # (B, 1, 1, L): encoder self-attention
            "padding+causal": keep[:, None, None, :] & tf.subsequent_mask(length, device),  # (B, 1, L, L): decoder
        }
        for mask_name, mask in masks.items():
            with torch.no_grad():
                hand, _ = tf.scaled_dot_product_attention(q, k, v, mask)
                fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                times = take_turns(
                    {
                        "hand_written": functools.partial(tf.scaled_dot_product_attention, q, k, v, mask),
                        "fused": functools.partial(F.scaled_dot_product_attention, q, k, v, attn_mask=mask),
                    },
                    plan.warmup,
                    plan.repeats,
                    device,
                )
            record = {"length": length, "mask": mask_name, "batch": B, "heads": H, "d_k": d_k}
            record["max_abs_diff"] = (hand - fused).abs().max().item()
            record |= summarise(times, {"hand_written/fused": ("hand_written", "fused")})
            records.append(record)
        advance()
    return records


def measure_decoding(plan: Plan, device: torch.device, advance: Callable[[], None]) -> list[dict]:
    """greedy_decode against the key/value-cached decoder of stage 14, on the same (untrained) model."""
    cache_module = get_stage(14).load()
    longest = max(plan.decode_lengths)
    config = tf.TransformerConfig(**plan.decode_config, dropout=0.0, max_len=longest + 1)
    torch.manual_seed(0)
    model = tf.Transformer(config).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(
        tf.FIRST_SYMBOL, config.src_vocab_size, (plan.decode_batch, plan.decode_src_len), generator=generator
    )
    src[1:, plan.decode_src_len * 3 // 4 :] = tf.PAD  # padding in the source
    src = src.to(device)
    records = []
    for n in plan.decode_lengths:
        plain = tf.greedy_decode(model, src, n, tf.BOS)
        cached = cache_module.cached_greedy_decode(model, src, n, tf.BOS)
        # no warm-up beyond the two calls above; fewer repeats for the longest, O(n^2) plain run
        repeats = plan.repeats if n < 256 else max(1, plan.repeats // 2)
        times = take_turns(
            {
                "plain": lambda n=n: tf.greedy_decode(model, src, n, tf.BOS),
                "cached": lambda n=n: cache_module.cached_greedy_decode(model, src, n, tf.BOS),
            },
            0,
            repeats,
            device,
        )
        record = {
            "output_len": n,
            "batch": plan.decode_batch,
            "src_len": plan.decode_src_len,
            "config": dataclasses.asdict(config),
            "identical": bool(torch.equal(plain, cached)),
        }
        record |= summarise(times, {"plain/cached": ("plain", "cached")})
        record["tokens_per_s"] = {label: plan.decode_batch * n / t for label, t in record["median_s"].items()}
        records.append(record)
        advance()
    return records


def measure_demo_training(plan: Plan, advance: Callable[[], None], target: float = 0.99) -> dict:
    """The demo's own training run (transformer.train_toy_model, its default steps and batch), and the
    training time until the model first writes >= target of the held-out examples exactly right.

    train_toy_model hands on_step no model, so for the length of the run we wrap transformer.train_step
    (which it calls once per step) to keep a snapshot of the weights every eval_every steps, with the
    training seconds so far. The snapshots are scored with transformer.exact_match after the run, so
    scoring takes no training time.
    """
    defaults = inspect.signature(tf.train_toy_model).parameters
    steps = plan.demo_max_steps or defaults["steps"].default
    batch_size = plan.demo_batch_size or defaults["batch_size"].default
    every = plan.demo_eval_every
    snapshots: list[tuple[int, float, dict]] = []
    state = {"step": 0, "trained_s": 0.0, "model": None}
    original = tf.train_step

    def timed_train_step(model, src, tgt, optimizer, scheduler):
        start = time.perf_counter()
        loss = original(model, src, tgt, optimizer, scheduler)
        state["trained_s"] += time.perf_counter() - start
        state["step"] += 1
        if state["step"] % every == 0 or state["step"] == steps:
            snapshots.append((state["step"], state["trained_s"], copy.deepcopy(model.state_dict())))
        return loss

    tf.train_step = timed_train_step
    try:
        model, test_src, test_tgt, seconds = tf.train_toy_model(
            steps=steps, batch_size=batch_size, seed=0, device="cpu"
        )
    finally:
        tf.train_step = original
    test_src, test_tgt = test_src[: plan.demo_eval_examples], test_tgt[: plan.demo_eval_examples]
    history = []
    reached = None
    for step, trained_s, weights in snapshots:
        model.load_state_dict(weights)
        _, correct = tf.exact_match(model, test_src, test_tgt)
        accuracy = correct.float().mean().item()
        history.append({"step": step, "train_s": trained_s, "exact_match": accuracy})
        if accuracy >= target:
            reached = history[-1]
            break
    advance()
    return {
        "task": "reverse",
        "target": target,
        "steps_run": steps,
        "batch_size": batch_size,
        "eval_every": every,
        "eval_examples": len(test_src),
        "run_seconds": seconds,  # train_toy_model's own clock, all steps_run steps
        "reached": reached is not None,
        "steps": reached["step"] if reached else None,
        "seconds": reached["train_s"] if reached else None,
        "best_exact_match": max(h["exact_match"] for h in history),
        "history": history,
    }


def measure_matmul_peak(plan: Plan, device: torch.device) -> dict:
    """GFLOP/s of one n x n by n x n matrix product (2 n^3 FLOPs), float32 and bfloat16: what this machine's
    matrix units give at their best, the ceiling every other row is read against."""
    n = plan.matmul_n
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))
    operands = {"float32": (a, b), "bfloat16": (a.bfloat16(), b.bfloat16())}
    candidates = {dtype: functools.partial(torch.mm, x, y) for dtype, (x, y) in operands.items()}
    times = take_turns(candidates, plan.warmup + 1, plan.repeats, device)
    record = {"n": n, "flops": 2 * n**3} | summarise(times, {"float32/bfloat16": ("float32", "bfloat16")})
    record["gflops"] = {dtype: record["flops"] / t / 1e9 for dtype, t in record["median_s"].items()}
    return record


def count_flops(step: Callable[[], object]) -> int:
    """The FLOPs of the matrix products of one call (forward and backward), counted by PyTorch's FlopCounterMode
    from the shapes: 2 per multiply-add, the unit of the matmul peak. Elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure_precision(plan: Plan, device: torch.device, advance: Callable[[], None]) -> dict:
    """translate.py's training step (forward, the loss, backward, Adam), in float32 and in bfloat16 autocast, ours
    and nn.Transformer with the same weights, all four taking turns on one full batch; and the matmul peak."""
    peak = measure_matmul_peak(plan, device)
    overrides, batch, length = plan.precision_size
    config = tf.TransformerConfig(**overrides)
    torch.manual_seed(0)
    ours = tf.Transformer(config).to(device)
    models = {"ours": ours, "torch": TorchReference(ours)}
    src, tgt = model_batch("precision", config, batch, length, seed=0, device=device)
    # the same function: the bf16 logits of both against ours in float32. With autograd on, as in training:
    # nn.Transformer's inference fast path takes no autocast (it raises on the bfloat16 inputs)
    reference = ours.eval()(src, tgt[:, :-1]).detach()
    bf16_diff = {}
    for label, model in models.items():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model.eval()(src, tgt[:, :-1]).detach().float()
        bf16_diff[label] = ((logits - reference).norm() / reference.norm()).item()
    steps = {}
    for label, model in models.items():
        for precision in ("fp32", "bf16"):
            twin = copy.deepcopy(model).train()  # each its own weights and Adam: they all start from the same ones
            optimizer, scheduler = tf.make_optimizer(twin, config, amsgrad=True)  # as translate.py trains
            translate.fuse_adam(optimizer, precision == "bf16")
            steps[f"{label}_{precision}"] = functools.partial(
                translate.train_step, twin, config, src, tgt, optimizer, scheduler, translate.Processes(), precision
            )
    flops = count_flops(steps["ours_fp32"])  # the same products in all four: the count of ours
    times = take_turns(steps, plan.warmup + 1, plan.repeats, device)  # + 1: Adam allocates its state
    target_tokens = int((tgt[:, 1:] != config.pad_id).sum())
    record = {
        "config": dataclasses.asdict(config),
        "batch": batch,
        "src_len": src.size(1),
        "tgt_len": tgt.size(1) - 1,
        "target_tokens": target_tokens,
        "parameters": sum(p.numel() for p in ours.parameters()),
        "flops": flops,  # of one step: forward and backward matrix products
        "flops_per_target_token": flops / target_tokens,
        "bf16_logit_rel_diff_vs_fp32": bf16_diff,
        "matmul_peak": peak,
    }
    ratios = {
        "ours_bf16/torch_bf16": ("ours_bf16", "torch_bf16"),
        "ours_fp32/torch_fp32": ("ours_fp32", "torch_fp32"),
        "ours_fp32/ours_bf16": ("ours_fp32", "ours_bf16"),
    }
    record |= summarise(times, ratios)
    record["tokens_per_s"] = {label: target_tokens / t for label, t in record["median_s"].items()}
    record["gflops"] = {label: flops / t / 1e9 for label, t in record["median_s"].items()}
    record["fraction_of_peak"] = {
        label: record["gflops"][label] / peak["gflops"]["bfloat16" if label.endswith("bf16") else "float32"]
        for label in record["gflops"]
    }
    advance()
    return record


def measure_loss(plan: Plan, device: torch.device, advance: Callable[[], None]) -> dict:
    """The label-smoothed loss and its gradient at the precision rows' size: transformer.py's, which builds the
    smoothed target q (B*T, V), against translate.py's closed form, which builds no q, taking turns."""
    overrides, batch, length = plan.precision_size
    vocab = overrides["tgt_vocab_size"]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, length, vocab, generator=generator).to(device).requires_grad_()  # (B, T, V)
    target = torch.randint(1, vocab, (batch, length), generator=generator).to(device)  # (B, T): no padding

    def with_q():
        tf.label_smoothed_loss(logits, target, 0.1, 0).backward()

    def closed_form():
        (translate.smoothed_loss_sum(logits, target, 0.1, 0) / target.numel()).backward()

    times = take_turns({"with_q": with_q, "closed_form": closed_form}, plan.warmup, plan.repeats, device)
    record = {"batch": batch, "length": length, "vocab": vocab}
    record |= summarise(times, {"with_q/closed_form": ("with_q", "closed_form")})
    advance()
    return record


# --- report ------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def goals(results: dict) -> list[dict]:
    """The issue's goals, judged from this run's numbers (reported, never asserted)."""

    def find(size: str, mode: str) -> dict | None:
        return next((r for r in results["models"] if r["size"] == size and r["mode"] == mode), None)

    out = []
    train, infer = find("base", "train"), find("base", "inference")
    if train:
        ratio = train["ratio"]["ours/torch"]
        out.append(
            {
                "goal": "training step at base size <= 1.15x nn.Transformer",
                "measured": f"{ratio:.2f}x",
                "met": ratio <= 1.15,
            }
        )
    if infer:
        ratio = infer["ratio"]["fused/torch"]
        out.append(
            {
                "goal": "fused stage at inference <= 1.00x nn.Transformer (base)",
                "measured": f"{ratio:.2f}x",
                "met": ratio <= 1.0,
            }
        )
    longest = max(results["decoding"], key=lambda r: r["output_len"])
    if longest["output_len"] >= 256:
        speedup = longest["ratio"]["plain/cached"]
        out.append(
            {
                "goal": "key/value cache >= 3x faster than greedy_decode at 256 tokens, same tokens",
                "measured": f"{speedup:.1f}x, identical: {longest['identical']}",
                "met": speedup >= 3 and longest["identical"],
            }
        )
    precision = results.get("precision")
    if precision:
        ratio = precision["ratio"]["ours_bf16/torch_bf16"]
        out.append(
            {
                "goal": "bf16 training step at Multi30k size no slower than nn.Transformer's under the same autocast",
                "measured": f"{ratio:.2f}x",
                "met": ratio <= 1.0,
            }
        )
        fraction = precision["fraction_of_peak"]["ours_bf16"]
        out.append(
            {
                "goal": "bf16 training step at Multi30k size >= 50% of the measured bf16 matmul peak",
                "measured": f"{100 * fraction:.0f}%",
                "met": fraction >= 0.5,
            }
        )
    if not results["meta"]["quick"]:
        seconds = results["meta"]["seconds"]
        out.append({"goal": "make bench <= 3 minutes", "measured": f"{seconds:.0f} s", "met": seconds <= 180})
    return out


def print_tables(results: dict, console: Console) -> None:
    meta = results["meta"]
    console.print(
        f"[bold]{meta['cpu']}[/], {meta['threads']} threads, torch {meta['torch']}, {meta['device']}"
        f"{' (quick: tiny sizes, one repeat)' if meta['quick'] else ''}; median of {meta['repeats']}"
    )
    table = Table(
        title="ms per call: ours, the fused stage 13, and torch.nn.Transformer with the same weights (ratio < 1: faster)"
    )
    for column in ("size", "mode", "batch x src/tgt", "ours", "fused", "torch", "ours/torch", "fused/torch"):
        table.add_column(column, justify="left" if column in ("size", "mode") else "right", no_wrap=True)
    for r in results["models"]:
        m = r["median_s"]
        table.add_row(
            r["size"],
            r["mode"],
            f"{r['batch']} x {r['src_len']}/{r['tgt_len']}",
            *(f"{m[k] * 1e3:.1f}" for k in ("ours", "fused", "torch")),
            f"{r['ratio']['ours/torch']:.2f}",
            f"{r['ratio']['fused/torch']:.2f}",
        )
    console.print(table)

    table = Table(title="attention alone, forward, h=8, d_k=64: hand-written Eq. (1) vs F.scaled_dot_product_attention")
    for column in ("length", "mask", "hand-written", "fused", "hand/fused", "max |diff|"):
        table.add_column(column, justify="right")
    for r in results["attention"]:
        m = r["median_s"]
        table.add_row(
            str(r["length"]),
            r["mask"],
            f"{m['hand_written'] * 1e3:.2f} ms",
            f"{m['fused'] * 1e3:.2f} ms",
            f"{r['ratio']['hand_written/fused']:.1f}x",
            f"{r['max_abs_diff']:.0e}",
        )
    console.print(table)

    table = Table(title="greedy decoding, with and without the key/value cache (stage 14)")
    for column in ("tokens", "greedy_decode", "cached", "speed-up", "identical"):
        table.add_column(column, justify="right")
    for r in results["decoding"]:
        m = r["median_s"]
        table.add_row(
            str(r["output_len"]),
            f"{m['plain'] * 1e3:.0f} ms",
            f"{m['cached'] * 1e3:.0f} ms",
            f"{r['ratio']['plain/cached']:.1f}x",
            "[green]yes[/]" if r["identical"] else "[red]NO[/]",
        )
    console.print(table)

    d = results["demo_training"]
    if d["reached"]:
        console.print(
            f"demo training ({d['task']}, batch {d['batch_size']}): {100 * d['target']:.0f}% exact match after "
            f"{d['steps']} steps, {d['seconds']:.1f} s of training"
        )
    else:
        console.print(
            f"demo training: {100 * d['target']:.0f}% exact match not reached in {d['steps_run']} steps "
            f"(best {100 * d['best_exact_match']:.1f}%)"
        )

    p = results["precision"]
    peak = p["matmul_peak"]
    c = p["config"]
    table = Table(
        title=f"translate.py's training step at d_model {c['d_model']}, h {c['n_heads']}, N {c['n_layers']}, "
        f"d_ff {c['d_ff']}, vocabulary {c['tgt_vocab_size']}; {p['batch']} x {p['src_len']}/{p['tgt_len']} tokens; "
        f"{p['flops_per_target_token'] / 1e6:.1f} MFLOP per target token (matrix products, counted). "
        f"Matmul peak ({peak['n']}^2): {peak['gflops']['float32']:.0f} GFLOP/s float32, "
        f"{peak['gflops']['bfloat16']:.0f} bfloat16"
    )
    for column in ("model", "precision", "ms per step", "target tokens/s", "GFLOP/s", "of its peak"):
        table.add_column(column, justify="left" if column in ("model", "precision") else "right", no_wrap=True)
    for label in ("ours_fp32", "torch_fp32", "ours_bf16", "torch_bf16"):
        model, precision = label.split("_")
        table.add_row(
            "ours" if model == "ours" else "nn.Transformer",
            "float32" if precision == "fp32" else "bfloat16 autocast",
            f"{p['median_s'][label] * 1e3:.0f}",
            f"{p['tokens_per_s'][label]:,.0f}",
            f"{p['gflops'][label]:.0f}",
            f"{100 * p['fraction_of_peak'][label]:.0f}%",
        )
    console.print(table)
    console.print(
        f"bf16 over fp32, ours: {p['ratio']['ours_fp32/ours_bf16']:.2f}x faster; ours / nn.Transformer: "
        f"{p['ratio']['ours_fp32/torch_fp32']:.2f} in float32, {p['ratio']['ours_bf16/torch_bf16']:.2f} in bfloat16"
    )
    loss = results.get("loss")
    if loss:
        console.print(
            f"label-smoothed loss and its gradient over {loss['batch']} x {loss['length']} tokens, V = {loss['vocab']}: "
            f"with q {1e3 * loss['median_s']['with_q']:.1f} ms, closed form {1e3 * loss['median_s']['closed_form']:.1f} "
            f"ms ({loss['ratio']['with_q/closed_form']:.2f}x)"
        )

    if results["goals"]:
        table = Table(title="goals (measured, not asserted)")
        for column in ("goal", "measured", ""):
            table.add_column(column)
        for g in results["goals"]:
            table.add_row(g["goal"], g["measured"], "[green]met[/]" if g["met"] else "[yellow]not met[/]")
        console.print(table)


def draw_figure(results: dict, path: Path, dpi: int) -> None:
    """Time against sequence length: attention alone, and greedy decoding with and without the cache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "hand_written": ("hand-written Eq. (1)", "tab:red"),
        "fused": ("F.scaled_dot_product_attention", "tab:blue"),
    }
    for mask, line in (("padding", "-"), ("padding+causal", "--")):
        rows = [r for r in results["attention"] if r["mask"] == mask]
        for key, (label, colour) in styles.items():
            left.plot(
                [r["length"] for r in rows],
                [r["median_s"][key] * 1e3 for r in rows],
                line,
                marker="o",
                color=colour,
                label=f"{label}, {mask} mask",
            )
    first = results["attention"][0]
    lengths = sorted({r["length"] for r in results["attention"]})
    left.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms per call")
    left.set_title(f"attention alone, B={first['batch']}, h={first['heads']}, d_k={first['d_k']}")
    left.minorticks_off()
    left.set_xticks(lengths, [str(n) for n in lengths])
    left.legend(fontsize=8)
    rows = results["decoding"]
    for key, label, colour in (("plain", "greedy_decode", "tab:red"), ("cached", "with key/value cache", "tab:blue")):
        right.plot(
            [r["output_len"] for r in rows], [r["median_s"][key] for r in rows], marker="o", color=colour, label=label
        )
    config = rows[0]["config"]
    right.set(xscale="log", yscale="log", xlabel="tokens written", ylabel="seconds")
    right.set_title(f"greedy decoding, B={rows[0]['batch']}, d_model={config['d_model']}, N={config['n_layers']}")
    right.minorticks_off()
    right.set_xticks([r["output_len"] for r in rows], [str(r["output_len"]) for r in rows])
    right.legend(fontsize=8)
    meta = results["meta"]
    fig.suptitle(
        f"{meta['cpu']}, {meta['threads']} threads, torch {meta['torch']} (median of {meta['repeats']})", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# --- command line ------------------------------------------------------------


def run(plan: Plan, out_dir: Path, device: torch.device, console: Console) -> dict:
    """Measure everything in plan, print the tables, write JSON and the figure to out_dir."""
    start = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results: dict = {
        "meta": machine_info(device) | {"quick": plan.quick, "warmup": plan.warmup, "repeats": plan.repeats}
    }
    results["meta"]["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    total = 2 * len(plan.model_sizes) + len(plan.attention_lengths) + len(plan.decode_lengths) + 3
    progress = Progress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        bar = progress.add_task("benchmark", total=total)

        def step(description: str) -> Callable[[], None]:
            progress.update(bar, description=description)
            return lambda: progress.advance(bar)

        results["models"] = measure_models(plan, device, step("model vs nn.Transformer"))
        results["attention"] = measure_attention(plan, device, step("attention over lengths"))
        results["decoding"] = measure_decoding(plan, device, step("greedy decoding"))
        results["demo_training"] = measure_demo_training(plan, step("demo training to 99%"))
        results["precision"] = measure_precision(plan, device, step("float32 and bfloat16 steps"))
        results["loss"] = measure_loss(plan, device, step("label-smoothed loss"))
    results["meta"]["seconds"] = time.perf_counter() - start
    results["meta"]["load_average"] = {"before": load_before, "after": os.getloadavg() if load_before else None}
    results["goals"] = goals(results)

    print_tables(results, console)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "bench_quick" if plan.quick else "bench"
    json_path, figure_path = out_dir / f"{stem}.json", out_dir / f"{stem}_attention.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    draw_figure(results, figure_path, plan.figure_dpi)
    written = [json_path, figure_path]
    if not plan.quick and TALK_FIGURE.parent.is_dir():
        shutil.copyfile(figure_path, TALK_FIGURE)
        written.append(TALK_FIGURE)
    console.print("wrote " + ", ".join(_display(p) for p in written) + f" in {results['meta']['seconds']:.0f} s")
    return results


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = tf.OneLineParser(
        prog=PROG, description="Benchmark our Transformer against torch.nn.Transformer, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: a smoke test in seconds")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where the JSON and the figure go (default: bench/results)"
    )
    parser.add_argument("--threads", type=tf.positive_int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to measure (default: cpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{PROG}: error: device 'cuda' is not available on this machine; use --device cpu", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"{PROG}: error: cannot write results to {args.out}: {error.strerror}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    if not console.is_terminal:  # piped into a log: wide enough for the tables
        console = Console(width=120)
    run(QUICK if args.quick else FULL, args.out, torch.device(args.device), console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
