"""The talk's figures, drawn with matplotlib from the real code: `make figures` writes them to talk/figures/.

Every number in a figure comes from transformer.py (or from a pitfall variant of it): the masks are
transformer's masks, the shapes come from a forward pass through MultiHeadAttention, the attention
maps and residual norms from a model trained with train_toy_model. Nothing is typed in by hand.

    python talk/figures.py                        # all figures into talk/figures/
    python talk/figures.py --only masks --only scaling --out /tmp/figs

From Python (the tests do this): `generate(["masks"], out_dir=tmp_path)`; each figure also has a data
function (mask_data, positional_encoding_data, ...) that returns the numbers it plots.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import multiprocessing
import os
import struct
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transformer as tf  # noqa: E402
import translate as tr  # noqa: E402
from translation import corpora, decoding  # noqa: E402

FIGURES_DIR = Path(__file__).resolve().parent / "figures"
PROG = "talk/figures.py"

# Steps for the trained figures. The demo model trains as long as `make demo` trains it (train_toy_model's
# default), so the figures show the model the audience sees learn. The pitfall curves need only the start
# of training, where the bugs already show.
DEMO_STEPS: int = inspect.signature(tf.train_toy_model).parameters["steps"].default
TRANSLATE_STEPS: int = tr.TrainSettings.steps  # as many as `make translate` trains
AVERAGE_LAST, AVERAGE_EVERY = 5, 25  # as `make translate`: the last 5 checkpoints, 25 steps apart, averaged (§6.1)
TRANSLATE_NUMBER = 342_719  # dreihundertzweiundvierzigtausendsiebenhundertneunzehn: units before tens, twice
PITFALL_STEPS = 80
PITFALL_BATCH = 16
SEED = 0

# Okabe & Ito (2008), a palette that colour-blind viewers can tell apart; yellow is left out (it fades on white).
BLUE, VERMILLION, GREEN, ORANGE, PURPLE, SKY, BLACK = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#E69F00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
)
PALETTE = (BLUE, VERMILLION, GREEN, ORANGE, PURPLE, SKY, BLACK)
SEQUENTIAL = "viridis"  # perceptually uniform and colour-blind safe
DIVERGING = "PuOr"  # ColorBrewer, colour-blind safe

FIGSIZE = (16, 9)  # inches: 16:9 like the slides
DPI = 100  # -> 1600 x 900 pixels
STYLE = {
    "font.size": 18,
    "axes.titlesize": 20,
    "axes.labelsize": 18,
    "xtick.labelsize": 15,
    "ytick.labelsize": 15,
    "legend.fontsize": 15,
    "figure.titlesize": 23,
    "figure.titleweight": "bold",
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 3,
    "savefig.facecolor": "white",
}


def new_figure(title: str, **subplots) -> tuple[Figure, Any]:
    """A 16:9 figure with a bold title saying what to see. Figure(), not pyplot: no global state."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle(title)
    return fig, fig.subplots(**subplots)


def caption(fig: Figure, text: str, **style) -> None:
    """One line under the figure saying where its numbers come from, with room kept for it."""
    fig.text(0.5, 0.02, text, ha="center", **({"fontsize": 16} | style))
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))


def token_label(token: int) -> str:
    """How a token of the toy tasks reads on an axis: the symbols as digits, as the demo prints them."""
    special = {tf.PAD: "PAD", tf.BOS: "BOS", tf.EOS: "EOS"}
    return special.get(token, str(token - tf.FIRST_SYMBOL))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on n threads for a while. These models are tiny: on a shared two-core machine a training step
    took 0.04 s on one thread and 0.2 s on two, which fought the other processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -----------------------------------------------------------------------------
# masks.png: padding, causal and combined, on a real example
# -----------------------------------------------------------------------------


@dataclass
class MaskData:
    tokens: list[int]  # the decoder input of one example: BOS, the answer, EOS, padding
    labels: list[str]
    padding: np.ndarray  # (T, T) bool, True = may attend: padding_mask broadcast over the queries
    causal: np.ndarray  # (T, T) bool: subsequent_mask
    combined: np.ndarray  # (T, T) bool: target_mask, the decoder self-attention mask


def mask_data(seed: int = SEED) -> MaskData:
    """The decoder's masks for a short reverse-task example that ends in padding."""
    generator = torch.Generator().manual_seed(seed)
    _, tgt = tf.make_examples("reverse", 16, tf.N_SYMBOLS, 3, 6, generator)  # tgt (16, 8)
    decoder_input = tgt[:, :-1]  # (16, 7): what the decoder reads under teacher forcing
    row = int((decoder_input == tf.PAD).sum(dim=1).argmax())  # the example with the most padding
    tokens = decoder_input[row : row + 1]  # (1, T)
    T = tokens.size(1)
    padding = tf.padding_mask(tokens, tf.PAD).expand(1, 1, T, T)[0, 0]  # (1, 1, 1, T) -> (T, T)
    causal = tf.subsequent_mask(T)[0, 0]  # (T, T)
    combined = tf.target_mask(tokens, tf.PAD)[0, 0]  # (T, T)
    ids = tokens[0].tolist()
    return MaskData(ids, [token_label(t) for t in ids], padding.numpy(), causal.numpy(), combined.numpy())


def draw_masks(path: Path, data: MaskData) -> None:
    fig, axes = new_figure("Decoder masks on a real example: row = a query, blue = the keys it may attend to", ncols=3)
    cmap = ListedColormap(["#EEEEEE", BLUE])
    T = len(data.tokens)
    panels = (
        ("padding mask\nnever attend to PAD", data.padding),
        ("subsequent mask\nnever attend to the future", data.causal),
        ("combined: target_mask\npadding AND subsequent", data.combined),
    )
    for ax, (title, mask) in zip(axes, panels, strict=True):
        ax.imshow(mask, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks(range(T), data.labels, rotation=90)
        ax.set_yticks(range(T), data.labels)
        ax.set_xticks(np.arange(T + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(T + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("key (attended to)")
        for side in ax.spines.values():
            side.set_visible(False)
    axes[0].set_ylabel("query (attending)")
    fig.legend(
        handles=[Patch(color=BLUE, label="True: may attend"), Patch(color="#DDDDDD", label="False: masked out")],
        loc="lower center",
        ncols=2,
        frameon=False,
    )
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    fig.savefig(path)


# -----------------------------------------------------------------------------
# positional_encoding.png: a heatmap and a few dimensions as curves
# -----------------------------------------------------------------------------


def positional_encoding_data(d_model: int = 128, n_positions: int = 100) -> np.ndarray:
    """transformer.PositionalEncoding's table, (n_positions, d_model)."""
    return tf.PositionalEncoding(d_model, n_positions).pe.numpy()


def wavelength(dimension: int, d_model: int) -> float:
    """§3.5: dimensions 2i and 2i+1 have wavelength 2*pi * 10000^(2i/d_model)."""
    return 2 * math.pi * 10000 ** ((dimension - dimension % 2) / d_model)


def draw_positional_encoding(path: Path, pe: np.ndarray) -> None:
    n_positions, d_model = pe.shape
    fig, (heat, curves) = new_figure(
        "Positional encoding (§3.5): each dimension is a sinusoid, slower to the right",
        ncols=2,
        width_ratios=(1.1, 1),
    )
    image = heat.imshow(pe, cmap=DIVERGING, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    heat.set_title(f"PE(position, dimension), d_model = {d_model}")
    heat.set_xlabel("dimension")
    heat.set_ylabel("position")
    fig.colorbar(image, ax=heat, shrink=0.8)
    dims = (4, 16, 32, 48)
    for dim, colour in zip(dims, PALETTE, strict=False):
        curves.plot(
            pe[:, dim], color=colour, label=f"dim {dim}: wavelength {wavelength(dim, d_model):.0f}", linewidth=3
        )
        heat.axvline(dim, color=colour, linewidth=3, linestyle="--")
    curves.set_title("a few dimensions (dashed lines on the left)")
    curves.set_xlabel("position")
    curves.set_ylabel("PE(position, dimension)")
    curves.set_ylim(-1.1, 1.1)
    curves.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, fontsize=15, frameon=False)
    fig.savefig(path)


# -----------------------------------------------------------------------------
# mha_shapes.png: shapes flowing through multi-head attention, from a real forward pass
# -----------------------------------------------------------------------------

# Distinct sizes, so that every number in a shape names exactly one symbol of the shape legend.
SHAPE_SIZES = dict(batch=2, tgt_len=5, src_len=7, d_model=512, n_heads=8)


def mha_shapes_data(
    batch: int = 2, tgt_len: int = 5, src_len: int = 7, d_model: int = 512, n_heads: int = 8, seed: int = SEED
) -> dict[str, tuple[int, ...]]:
    """The shape of every intermediate tensor of one cross-attention call of transformer.MultiHeadAttention
    (queries from a target of tgt_len, keys and values from a source of src_len), recorded during the call."""
    with torch.random.fork_rng():  # seeded, without touching the caller's random state
        torch.manual_seed(seed)
        mha = tf.MultiHeadAttention(d_model, n_heads)
        query = torch.randn(batch, tgt_len, d_model)  # (B, T_q, D)
        memory = torch.randn(batch, src_len, d_model)  # (B, T_k, D)
    mha.keep_weights = True
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(mha, name).register_forward_hook(
            lambda module, args, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in ("w_q", "w_k", "w_v", "w_o")
    ]
    split_calls: list[tuple[int, ...]] = []
    split, merge = mha.split_heads, mha.merge_heads

    def record_split(x):
        out = split(x)
        split_calls.append(tuple(out.shape))
        return out

    def record_merge(x):
        shapes["context"] = tuple(x.shape)
        out = merge(x)
        shapes["merged"] = tuple(out.shape)
        return out

    mha.split_heads, mha.merge_heads = record_split, record_merge  # instance attributes shadow the methods
    mask = torch.ones(batch, 1, 1, src_len, dtype=torch.bool)  # (B, 1, 1, T_k)
    try:
        with torch.no_grad():
            mha(query, memory, memory, mask)
    finally:
        for hook in hooks:
            hook.remove()
        del mha.split_heads, mha.merge_heads
    shapes["q_heads"], shapes["k_heads"], shapes["v_heads"] = split_calls  # forward splits q, then k, then v
    shapes["weights"] = tuple(mha.last_weights.shape)
    inputs = {"query": tuple(query.shape), "key": tuple(memory.shape), "value": tuple(memory.shape)}
    order = ("w_q", "w_k", "w_v", "q_heads", "k_heads", "v_heads", "weights", "context", "merged", "w_o")
    return inputs | {name: shapes[name] for name in order}


def shape_symbols(batch: int, tgt_len: int, src_len: int, d_model: int, n_heads: int) -> dict[int, str]:
    """Each size's name in the shape legend. The sizes must differ, or a number would name two symbols."""
    symbols = {batch: "B", tgt_len: "T_q", src_len: "T_k", d_model: "D", n_heads: "H", d_model // n_heads: "d_k"}
    if len(symbols) != 6:
        raise ValueError("the sizes of the shape figure must all differ, so that each number names one symbol")
    return symbols


def draw_mha_shapes(path: Path, shapes: dict[str, tuple[int, ...]], symbols: dict[int, str]) -> None:
    fig, ax = new_figure("Multi-head attention, shape by shape: heads become a batch dimension")
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 8.4)
    ax.axis("off")

    def label(name: str) -> str:
        numbers = shapes[name]
        return f"({', '.join(map(str, numbers))})  {' · '.join(symbols[n] for n in numbers)}"

    def box(x: float, y: float, title: str, name: str, colour: str, width: float = 4.2) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - 0.42),
                width,
                0.84,
                boxstyle="round,pad=0.04,rounding_size=0.15",
                facecolor=colour,
                alpha=0.18,
                edgecolor=colour,
                linewidth=2.5,
            )
        )
        ax.text(x, y + 0.17, title, ha="center", va="center", fontsize=16)
        ax.text(x, y - 0.19, label(name), ha="center", va="center", fontsize=16, family="monospace", weight="bold")

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate(
            "", (x1, y1 + 0.46), (x0, y0 - 0.46), arrowprops=dict(arrowstyle="-|>", color="#555555", linewidth=2)
        )

    lanes = {"q": 2.4, "k": 7.0, "v": 11.6}
    rows = [7.7, 6.55, 5.4, 4.25, 3.1, 1.95, 0.8]
    names = {"q": ("query (decoder)", "w_q", "$W^Q$", "q_heads"), "k": ("key (encoder)", "w_k", "$W^K$", "k_heads")}
    names["v"] = ("value (encoder)", "w_v", "$W^V$", "v_heads")
    inputs = {"q": "query", "k": "key", "v": "value"}
    colours = {"q": BLUE, "k": GREEN, "v": ORANGE}
    for lane, x in lanes.items():
        title, linear, symbol, heads = names[lane]
        box(x, rows[0], title, inputs[lane], colours[lane])
        box(x, rows[1], f"linear {symbol}", linear, colours[lane])
        box(x, rows[2], "split heads: view + transpose", heads, colours[lane])
        arrow(x, rows[0], x, rows[1])
        arrow(x, rows[1], x, rows[2])
    scores_x = (lanes["q"] + lanes["k"]) / 2
    box(scores_x, rows[3], "softmax(Q Kᵀ / √d_k), masked", "weights", VERMILLION, width=4.6)
    arrow(lanes["q"], rows[2], scores_x - 0.8, rows[3])
    arrow(lanes["k"], rows[2], scores_x + 0.8, rows[3])
    context_x = (scores_x + lanes["v"]) / 2
    box(context_x, rows[4], "weights @ V: one output per head", "context", PURPLE, width=4.6)
    arrow(scores_x, rows[3], context_x - 0.8, rows[4])
    arrow(lanes["v"], rows[2], context_x + 0.8, rows[4])
    box(context_x, rows[5], "merge heads: transpose + reshape", "merged", PURPLE, width=4.6)
    arrow(context_x, rows[4], context_x, rows[5])
    box(context_x, rows[6], "linear $W^O$", "w_o", BLACK, width=4.6)
    arrow(context_x, rows[5], context_x, rows[6])

    legend = "\n".join(
        f"{symbol:>3} = {size:>3}  {meaning}"
        for size, symbol, meaning in sorted(
            ((size, symbol, SYMBOL_MEANING[symbol]) for size, symbol in symbols.items()),
            key=lambda item: list(SYMBOL_MEANING).index(item[1]),
        )
    )
    ax.text(
        2.6,
        3.15,
        "recorded from a forward pass\nof transformer.MultiHeadAttention",
        ha="center",
        va="center",
        fontsize=15,
    )
    ax.text(
        2.6,
        1.45,
        legend,
        ha="center",
        va="center",
        fontsize=15,
        family="monospace",
        bbox=dict(boxstyle="round,pad=0.5", facecolor="#F4F4F4", edgecolor="#999999"),
    )
    fig.savefig(path)


SYMBOL_MEANING = {
    "B": "batch",
    "T_q": "queries (target)",
    "T_k": "keys (source)",
    "D": "d_model",
    "H": "heads (h)",
    "d_k": "D / H per head",
}


# -----------------------------------------------------------------------------
# The trained demo model: attention_heatmaps.png and residual_stream.png
# -----------------------------------------------------------------------------


@dataclass
class TrainedModel:
    model: tf.Transformer
    test_src: torch.Tensor  # (N_TEST, S), never seen in training
    test_tgt: torch.Tensor  # (N_TEST, T)
    steps: int
    accuracy: float  # exact match on the held-out examples


def train_demo_model(
    steps: int = DEMO_STEPS,
    seed: int = SEED,
    on_step: Callable[[int, float, float], None] | None = None,
    eval_examples: int | None = None,
) -> TrainedModel:
    """The demo's model and task (reverse), trained with transformer.train_toy_model for `steps` steps;
    its exact match is measured on the first eval_examples held-out examples (all of them by default)."""
    with torch_threads(1):
        model, test_src, test_tgt, _ = tf.train_toy_model("reverse", steps, seed=seed, on_step=on_step)
        model.eval()
        _, correct = tf.exact_match(model, test_src[:eval_examples], test_tgt[:eval_examples])
    return TrainedModel(model, test_src, test_tgt, steps, correct.float().mean().item())


def n_symbols(tokens: torch.Tensor) -> torch.Tensor:
    """How many task symbols each row holds (BOS, EOS and padding not counted). tokens (N, L) -> (N,)."""
    return (tokens >= tf.FIRST_SYMBOL).sum(dim=-1)


def pick_example(src: torch.Tensor, length: int = 10) -> int:
    """The first source of `length` symbols (or the longest there is): a row that reads well on a slide."""
    lengths = n_symbols(src)  # (N,)
    hits = (lengths == length).nonzero()
    return int(hits[0, 0]) if len(hits) else int(lengths.argmax())


@dataclass
class AttentionData:
    src_labels: list[str]  # the source's tokens, padding cut off
    tgt_labels: list[str]  # the decoder's input: BOS and the answer's symbols
    # (n_layers, H, queries, keys), cut to the real tokens
    encoder_self: np.ndarray
    decoder_self: np.ndarray
    cross: np.ndarray


def attention_data(model: tf.Transformer, src: torch.Tensor, tgt: torch.Tensor) -> AttentionData:
    """Every attention map of one teacher-forced forward pass of src (1, S) and tgt (1, T), via keep_weights."""
    attentions = {
        "encoder_self": [layer.self_attn for layer in model.encoder.layers],
        "decoder_self": [layer.self_attn for layer in model.decoder.layers],
        "cross": [layer.cross_attn for layer in model.decoder.layers],
    }
    modules = [m for group in attentions.values() for m in group]
    was_training = model.training
    model.eval()
    for module in modules:
        module.keep_weights = True
    try:
        with torch.no_grad():
            model(src, tgt[:, :-1])  # the decoder reads BOS + answer; its last input is never read
    finally:
        for module in modules:
            module.keep_weights = False
        model.train(was_training)
    S = int((src[0] != tf.PAD).sum())  # source tokens that are not padding
    T = int(n_symbols(tgt[0])) + 1  # BOS and the answer's symbols: the inputs that predict a symbol
    maps = {
        key: np.stack([m.last_weights[0].numpy() for m in group]) for key, group in attentions.items()
    }  # each (n_layers, H, queries, keys)
    for module in modules:
        module.last_weights = None
    return AttentionData(
        [token_label(t) for t in src[0, :S].tolist()],
        [token_label(t) for t in tgt[0, :T].tolist()],
        maps["encoder_self"][:, :, :S, :S],
        maps["decoder_self"][:, :, :T, :T],
        maps["cross"][:, :, :T, :S],
    )


def anti_diagonal_share(cross: np.ndarray, length: int) -> float:
    """Of the attention that decoder input j pays to the source, the share on source position length-1-j:
    the symbol it must write next in the reverse task of a source with `length` symbols; averaged over
    j = 0..length-1 (and over any leading axes). cross: (..., T, S) with T, S >= length."""
    return float(np.mean([cross[..., j, length - 1 - j].mean() for j in range(length)]))


def draw_attention(path: Path, data: AttentionData, steps: int, accuracy: float) -> None:
    layer = data.cross.shape[0] - 1
    share = anti_diagonal_share(data.cross[layer].mean(axis=0), len(data.tgt_labels) - 1)
    if share >= 0.5:  # the title says what the data shows, also if training changes
        title = "Reversal, learned: cross-attention reads the source backwards"
    else:
        title = "Attention of the demo model: no clear anti-diagonal yet"
    fig, axes = new_figure(title, ncols=3)
    panels = (
        ("encoder self-attention", data.encoder_self, data.src_labels, data.src_labels, "source token"),
        ("decoder self-attention (masked)", data.decoder_self, data.tgt_labels, data.tgt_labels, "target token"),
        ("cross-attention", data.cross, data.tgt_labels, data.src_labels, "source token"),
    )
    for ax, (title, maps, rows, cols, xlabel) in zip(axes, panels, strict=True):
        image = ax.imshow(maps[layer].mean(axis=0), cmap=SEQUENTIAL, vmin=0, vmax=1)  # mean over the heads
        ax.set_title(title)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(f"key: {xlabel}")
    axes[0].set_ylabel("query: source token")
    axes[1].set_ylabel("query: decoder input")
    axes[2].set_ylabel("query: decoder input")
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    caption(
        fig,
        f"last layer, mean of {data.cross.shape[1]} heads · {100 * share:.0f}% of cross-attention on the anti-diagonal"
        f" · {steps} steps, {100 * accuracy:.0f}% exact match on held-out data",
    )
    fig.savefig(path)


@dataclass
class ResidualData:
    labels: list[str]  # one per Add & Norm, in order: "enc 1 attn", ...
    stream_in: np.ndarray  # mean norm of x entering each Add & Norm
    update: np.ndarray  # mean norm of the sub-layer's output added to it
    summed: np.ndarray  # mean norm of x + update, before the LayerNorm
    stream_out: np.ndarray  # mean norm after the LayerNorm


def residual_stream_data(model: tf.Transformer, src: torch.Tensor, tgt: torch.Tensor) -> ResidualData:
    """Norms of the residual stream at every Add & Norm of a teacher-forced forward pass, averaged over the
    real (non-padding) positions of the batch src (B, S), tgt (B, T)."""
    points: list[tuple[str, tf.AddAndNorm]] = []
    for i, layer in enumerate(model.encoder.layers, start=1):
        points += [(f"enc {i} attn", layer.add_norm_1), (f"enc {i} FFN", layer.add_norm_2)]
    for i, layer in enumerate(model.decoder.layers, start=1):
        points += [(f"dec {i} self", layer.add_norm_1), (f"dec {i} cross", layer.add_norm_2)]
        points += [(f"dec {i} FFN", layer.add_norm_3)]
    decoder_input = tgt[:, :-1]  # (B, T-1)
    real = {"enc": src != tf.PAD, "dec": decoder_input != tf.PAD}  # (B, L) each
    records: dict[str, tuple[float, float, float, float]] = {}

    def hook(name: str):
        keep = real[name[:3]]

        def record(module, args, out):
            x, update = args  # (B, L, D) each
            norms = [t.norm(dim=-1)[keep].mean().item() for t in (x, update, x + update, out)]  # (B, L) -> mean
            records[name] = tuple(norms)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in points]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(src, decoder_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    values = np.array([records[name] for name, _ in points])  # (points, 4)
    return ResidualData([name for name, _ in points], *values.T)


def draw_residual_stream(path: Path, data: ResidualData, d_model: int, steps: int) -> None:
    fig, ax = new_figure("Residual stream (post-LN): sub-layers add, LayerNorm rescales to ≈ √d_model")
    n = len(data.labels)
    x = np.arange(n)
    width = 0.26
    ax.bar(x - width, data.stream_in, width, color=SKY, label="‖x‖ entering the sub-layer")
    ax.bar(x, data.update, width, color=ORANGE, label="‖Sublayer(x)‖, the update")
    ax.bar(x + width, data.summed, width, color=VERMILLION, label="‖x + Sublayer(x)‖ before LayerNorm")
    ax.plot(x, data.stream_out, "o-", color=BLUE, markersize=11, label="‖LayerNorm(x + Sublayer(x))‖, passed on")
    ax.axhline(
        math.sqrt(d_model), color="#555555", linestyle=":", linewidth=2, label=f"√d_model = {math.sqrt(d_model):.0f}"
    )
    encoder_points = sum(label.startswith("enc") for label in data.labels)
    ax.axvline(encoder_points - 0.5, color="#999999", linewidth=1.5)
    ax.set_xticks(x, data.labels, rotation=30, ha="right")
    ax.set_ylabel("mean L2 norm per token")
    ax.set_title(f"every Add & Norm of the trained demo model ({steps} steps), averaged over held-out tokens")
    ax.legend(loc="upper left", ncols=2, fontsize=14)
    top = max(data.summed.max(), data.stream_in.max(), data.update.max())
    ax.set_ylim(0, top * 1.35)
    fig.savefig(path)


# -----------------------------------------------------------------------------
# scaling.png: why 1/sqrt(d_k)
# -----------------------------------------------------------------------------


@dataclass
class ScalingData:
    d_ks: list[int]
    score_std: dict[str, np.ndarray]  # "scaled"/"unscaled" -> std of the attention logits per d_k
    max_weight: dict[str, np.ndarray]  # mean of each query's largest attention weight per d_k
    gradient: dict[str, np.ndarray]  # mean Frobenius norm of the softmax Jacobian per d_k
    example_d_k: int
    example: dict[str, np.ndarray]  # one query's weights over the keys at example_d_k


def softmax_jacobian_norm(weights: torch.Tensor) -> torch.Tensor:
    """||diag(p) - p p^T||_F for each row p of weights (..., n): how much the softmax output still moves
    when its inputs move. It is 0 for a one-hot p: a saturated softmax passes no gradient back."""
    jacobian = torch.diag_embed(weights) - weights[..., :, None] * weights[..., None, :]  # (..., n, n)
    return jacobian.flatten(-2).norm(dim=-1)  # (...,)


def scaling_data(
    d_ks: Sequence[int] = (1, 4, 16, 64, 256, 1024),
    n_queries: int = 1000,
    n_keys: int = 16,
    example_d_k: int = 512,
    seed: int = SEED,
) -> ScalingData:
    """Footnote 4 of the paper, computed: queries and keys with independent N(0, 1) components have dot
    products of variance d_k. transformer.scaled_dot_product_attention divides by sqrt(d_k); feeding it
    q * sqrt(d_k) undoes the division, which gives the unscaled softmax(Q K^T) from the same function."""
    d_ks = sorted(d_ks)
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, dict[str, list[float]]] = {
        "scaled": {"std": [], "max": [], "grad": []},
        "unscaled": {"std": [], "max": [], "grad": []},
    }
    example = {}
    for d_k in sorted({*d_ks, example_d_k}):  # increasing, as d_ks
        q = torch.randn(n_queries, 1, d_k, generator=generator)  # (N, 1, d_k): one query per row
        k = torch.randn(n_queries, n_keys, d_k, generator=generator)  # (N, n_keys, d_k)
        v = torch.zeros(n_queries, n_keys, 1)  # the output is not needed, only the weights
        for kind, factor in (("scaled", 1.0), ("unscaled", math.sqrt(d_k))):
            _, weights = tf.scaled_dot_product_attention(q * factor, k, v)  # (N, 1, n_keys)
            weights = weights[:, 0]  # (N, n_keys)
            if d_k == example_d_k:
                example[kind] = weights[0].numpy()
            if d_k in d_ks:
                logits = (q * factor @ k.transpose(-2, -1))[:, 0] / math.sqrt(d_k)  # (N, n_keys), as the function
                stats[kind]["std"].append(logits.std().item())
                stats[kind]["max"].append(weights.max(dim=-1).values.mean().item())
                stats[kind]["grad"].append(softmax_jacobian_norm(weights).mean().item())
    return ScalingData(
        d_ks,
        {kind: np.array(s["std"]) for kind, s in stats.items()},
        {kind: np.array(s["max"]) for kind, s in stats.items()},
        {kind: np.array(s["grad"]) for kind, s in stats.items()},
        example_d_k,
        example,
    )


def draw_scaling(path: Path, data: ScalingData) -> None:
    fig, (bars, saturation, gradient) = new_figure(
        "Why 1/√d_k: unscaled, the softmax saturates and its gradient vanishes",
        ncols=3,
    )
    styles = {"unscaled": (VERMILLION, "softmax(q·k)", "s--"), "scaled": (BLUE, "softmax(q·k / √d_k)", "o-")}
    n_keys = len(data.example["scaled"])
    keys = np.arange(n_keys)
    for offset, kind in ((-0.2, "unscaled"), (0.2, "scaled")):
        colour, name, _ = styles[kind]
        bars.bar(keys + offset, data.example[kind], 0.4, color=colour, label=name)
    bars.set_title(f"one query over {n_keys} keys\nd_k = {data.example_d_k}")
    bars.set_xticks(keys[::3])
    bars.set_xlabel("key")
    bars.set_ylabel("attention weight")
    bars.set_ylim(0, 1.05)
    bars.legend(loc="upper right")
    for kind in ("unscaled", "scaled"):
        colour, name, style = styles[kind]
        saturation.plot(data.d_ks, data.max_weight[kind], style, color=colour, markersize=10, label=name)
        gradient.plot(data.d_ks, data.gradient[kind], style, color=colour, markersize=10, label=name)
    saturation.axhline(1 / n_keys, color="#777777", linestyle=":", linewidth=2)
    saturation.text(data.d_ks[-1], 1 / n_keys + 0.02, "uniform", ha="right", va="bottom", fontsize=14)
    saturation.set_title("largest weight per query\n(1 = one-hot)")
    saturation.set_ylim(0, 1.05)
    gradient.set_title("gradient through the softmax\n‖∂softmax / ∂logits‖")
    gradient.set_ylim(0, None)
    for ax in (saturation, gradient):
        ax.set_xscale("log", base=4)
        ax.set_xticks(data.d_ks, [str(d) for d in data.d_ks])
        ax.set_xlabel("d_k")
        ax.legend(loc="best")
    caption(
        fig,
        "q, k with independent N(0, 1) components (footnote 4); mean over random queries; "
        "via transformer.scaled_dot_product_attention",
        fontsize=15,
    )
    fig.savefig(path)


# -----------------------------------------------------------------------------
# pitfall_training_curves.png: the correct model against the silent pitfalls
# -----------------------------------------------------------------------------


@dataclass
class Curve:
    name: str  # "correct", or the pitfall's name
    title: str
    losses: list[float]  # one per training step


CORRECT = ("correct", "transformer.py, as in the paper")


def silent_pitfalls() -> list[tuple[str, str]]:
    """(name, title) of every pitfall that runs without an error (loud=False in debug_pitfalls.PITFALLS)."""
    from debug_pitfalls import PITFALLS

    return [(p.name, p.title) for p in PITFALLS if not p.loud]


def train_curve(name: str, steps: int, batch_size: int, seed: int) -> list[float]:
    """The training losses of transformer.py ("correct") or of one pitfall's variant, trained by the
    module's own train_toy_model. A module-level function, so that a worker process can run it."""
    if name == CORRECT[0]:
        module = tf
    else:
        from debug_pitfalls import load_variant

        module = load_variant(name)
    losses: list[float] = []
    with torch_threads(1):
        module.train_toy_model("reverse", steps, batch_size, seed, "cpu", lambda step, loss, lr: losses.append(loss))
    return losses


class PitfallRuns:
    """The correct model and every silent pitfall, trained with the same seed (so on the same batches).
    With workers > 0 the runs start at once in worker processes, and overlap with the other figures."""

    def __init__(self, steps: int, batch_size: int, seed: int, workers: int = 0):
        self.runs = [CORRECT, *silent_pitfalls()]
        self.args = (steps, batch_size, seed)
        self.pool = None
        if workers > 0:
            # spawn, not fork: a forked child of a process that has run torch's thread pool can hang
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            self.futures = [self.pool.submit(train_curve, name, *self.args) for name, _ in self.runs]

    def curves(self, on_run: Callable[[int, int], None] | None = None) -> list[Curve]:
        """Wait for every run; on_run(done, total) after each."""
        total, losses = len(self.runs), {}
        if self.pool is None:
            for name, _ in self.runs:
                losses[name] = train_curve(name, *self.args)
                if on_run is not None:
                    on_run(len(losses), total)
        else:
            names = {future: name for future, (name, _) in zip(self.futures, self.runs, strict=True)}
            try:
                for future in as_completed(names):
                    losses[names[future]] = future.result()
                    if on_run is not None:
                        on_run(len(losses), total)
            finally:
                self.close()
        return [Curve(name, title, losses[name]) for name, title in self.runs]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def pitfall_curves_data(
    steps: int = PITFALL_STEPS, batch_size: int = PITFALL_BATCH, seed: int = SEED, workers: int = 0
) -> list[Curve]:
    """Training losses of transformer.py and of every silent pitfall, the first one being the correct model."""
    return PitfallRuns(steps, batch_size, seed, workers).curves()


def smooth(values: Sequence[float], weight: float = 0.8) -> np.ndarray:
    """An exponential moving average, started at the first value, so a short noisy curve still reads."""
    out = np.empty(len(values))
    average = values[0]
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average
    return out


def draw_pitfall_curves(path: Path, curves: list[Curve], batch_size: int) -> None:
    correct, pitfalls = curves[0], curves[1:]
    nrows = max(1, min(3, math.ceil(len(pitfalls) / 4)))
    ncols = math.ceil(len(pitfalls) / nrows)
    fig, axes = new_figure(
        "Silent pitfalls: no error, and the loss curve is the only clue",
        nrows=nrows,
        ncols=ncols,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    steps = np.arange(1, len(correct.losses) + 1)
    reference = smooth(correct.losses)
    top = max(max(c.losses) for c in curves if np.isfinite(c.losses).all()) * 1.05
    for ax, curve in zip(axes.flat, pitfalls, strict=False):
        ax.plot(steps, correct.losses, color=BLACK, alpha=0.12, linewidth=1)
        ax.plot(steps, curve.losses, color=VERMILLION, alpha=0.2, linewidth=1)
        ax.plot(steps, reference, color=BLACK, linewidth=2.5)
        ax.plot(steps, smooth(curve.losses), color=VERMILLION, linewidth=3)
        ax.set_title(textwrap.fill(curve.title, 26), fontsize=15)
        if np.allclose(curve.losses, correct.losses, rtol=0, atol=1e-6):
            note = "identical: the loss\ncannot see this bug"
        else:
            note = f"end: {smooth(curve.losses)[-1]:.2f} vs {reference[-1]:.2f}"
        ax.text(0.97, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=14)
        ax.set_ylim(0, top)
        ax.tick_params(labelsize=13)
    for ax in axes.flat[len(pitfalls) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=15)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss", fontsize=15)
    fig.legend(
        handles=[
            matplotlib.lines.Line2D([], [], color=BLACK, linewidth=3, label="correct (transformer.py)"),
            matplotlib.lines.Line2D([], [], color=VERMILLION, linewidth=3, label="with the pitfall"),
        ],
        loc="lower center",
        ncols=2,
        frameon=False,
        title=f"reverse task, {len(steps)} steps of batch {batch_size}, same seed and batches for every run; "
        "faint: raw, bold: smoothed. A loss below the correct one is a red flag too",
        title_fontsize=14,
    )
    fig.get_layout_engine().set(rect=(0, 0.1, 1, 0.9))
    fig.savefig(path)


# -----------------------------------------------------------------------------
# lr_schedule.png: Eq. (3)
# -----------------------------------------------------------------------------


def lr_schedule_data(d_model: int, warmup_steps: int, steps: int, every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (3) from transformer.learning_rate at every `every`-th step up to steps (all steps when every = 1)."""
    step = np.arange(every, steps + 1, every)
    return step, np.array([tf.learning_rate(int(s), d_model, warmup_steps) for s in step])


def demo_schedule_data(steps: int | None = None) -> tuple[np.ndarray, np.ndarray, tf.TransformerConfig]:
    """The learning rate the demo really trains with: make_optimizer's scheduler on demo_config(), stepped
    once per training step (train_toy_model's default number of steps unless given)."""
    config = tf.demo_config()
    if steps is None:
        steps = inspect.signature(tf.train_toy_model).parameters["steps"].default
    optimizer, scheduler = tf.make_optimizer(torch.nn.Linear(1, 1), config)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate the coming step uses
        optimizer.step()  # no gradients: changes nothing, but keeps the scheduler's order check happy
        scheduler.step()
    return np.arange(1, steps + 1), np.array(rates), config


def draw_lr_schedule(path: Path) -> None:
    fig, axes = new_figure("Eq. (3): warm up linearly, then decay as 1/√step", ncols=2)
    paper = tf.TransformerConfig.paper_base(1, 1)
    demo_steps, demo_rates, demo = demo_schedule_data()
    panels = (
        (
            axes[0],
            *lr_schedule_data(paper.d_model, paper.warmup_steps, 100_000, every=50),
            paper,
            "the paper's base model",
        ),
        (axes[1], demo_steps, demo_rates, demo, "our demo (make demo), from its scheduler"),
    )
    for ax, (_, step, rate, config, name), colour in zip(axes, panels, (BLUE, VERMILLION), strict=True):
        ax.plot(step, rate * 1e3, color=colour)
        peak = tf.learning_rate(config.warmup_steps, config.d_model, config.warmup_steps)
        ax.plot([config.warmup_steps], [peak * 1e3], "o", color=BLACK, markersize=12)
        ax.annotate(
            f"peak {peak:.1e} at step {config.warmup_steps}",
            (config.warmup_steps, peak * 1e3),
            xytext=(0.35, 0.9),
            textcoords="axes fraction",
            arrowprops=dict(arrowstyle="->", color="#555555", linewidth=2),
            fontsize=16,
        )
        ax.axvspan(0, config.warmup_steps, color="#DDDDDD", alpha=0.5, linewidth=0)
        ax.set_title(f"{name}\nd_model = {config.d_model}, warmup_steps = {config.warmup_steps}")
        ax.set_xlabel("training step")
        ax.set_ylabel("learning rate (×10⁻³)")
        ax.set_xlim(0, step[-1])
        ax.set_ylim(0, peak * 1e3 * 1.25)
    caption(
        fig, "lrate = d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5); shaded: the warm-up", family="monospace"
    )
    fig.savefig(path)


# -----------------------------------------------------------------------------
# ln_warmup.png: post-LN against pre-LN across warm-up and peak learning rate (experiments/ln_warmup.py)
# -----------------------------------------------------------------------------

LN_RESULTS = ROOT / "experiments" / "ln_warmup.json"  # committed; `make experiment-ln` measures it again
LAYOUT_COLOURS = {"post-LN": VERMILLION, "pre-LN": BLUE}


def ln_warmup_data(path: Path = LN_RESULTS) -> dict:
    """The experiment's results as experiments/ln_warmup.py writes them (no training here)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def draw_ln_warmup(path: Path, data: dict) -> None:
    """A panel per (peak, warm-up): every seed's training loss, post-LN and pre-LN; beside them, each
    layer's gradient at initialisation (Xiong et al., 2020, Figure 3 in small)."""
    warmups, factors, setup = data["warmups"], data["peak_factors"], data["setup"]
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle("Why warm-up: post-LN (the paper's) against pre-LN, same data and initial weights")
    grid = fig.add_gridspec(len(factors), len(warmups) + 1, width_ratios=[1] * len(warmups) + [1.25])
    first = None
    for i, factor in enumerate(factors):
        for j, warmup in enumerate(warmups):
            ax = fig.add_subplot(grid[i, j], sharex=first, sharey=first)
            first = first or ax
            scores = []
            for layout, colour in LAYOUT_COLOURS.items():
                runs = [
                    r for r in data["runs"] if (r["layout"], r["warmup"], r["peak_factor"]) == (layout, warmup, factor)
                ]
                for run in runs:
                    if run["loss"]:
                        ax.plot(np.arange(1, len(run["loss"]) + 1), smooth(run["loss"]), color=colour, linewidth=1.5)
                    if run["diverged_at"] is not None:
                        ax.plot([run["diverged_at"]], [3.2], "x", color=colour, markersize=12, markeredgewidth=3)
                exact = [100 * (r["exact_match"] or 0.0) for r in runs]
                scores.append(f"{layout} {' '.join(f'{e:.0f}' for e in exact)}%")
            ax.text(0.97, 0.95, "\n".join(scores), transform=ax.transAxes, ha="right", va="top", fontsize=11)
            name = "no warm-up" if warmup == 0 else f"warm-up {warmup}"
            ax.set_title(f"peak {factor:g}× Eq. (3), {name}", fontsize=13)
            ax.tick_params(labelsize=11)
            if i == len(factors) - 1:
                ax.set_xlabel("step", fontsize=13)
            if j == 0:
                ax.set_ylabel("training loss", fontsize=13)
    first.set_ylim(0, 3.4)
    first.set_xlim(0, setup["steps"])
    ax = fig.add_subplot(grid[:, -1])
    layers = np.arange(1, setup["layers"] + 1)
    for layout, colour in LAYOUT_COLOURS.items():
        for stack, style in (("encoder", "--"), ("decoder", "-")):
            per_seed = [g[layout][stack] for g in data["gradients"]]
            mean = np.mean(np.array(per_seed), axis=0)
            ax.plot(layers, mean, style, marker="o", color=colour, label=f"{layout}, {stack}")
    ax.set_xticks(layers)
    ax.set_xlabel("layer (1 = next to the input)", fontsize=13)
    ax.set_ylabel("|∂loss/∂W₂| at initialisation", fontsize=13)
    ax.set_title("gradient per layer at step 0", fontsize=13)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=11)
    ax.legend(fontsize=11, loc="upper left")
    handles = [matplotlib.lines.Line2D([], [], color=c, label=name) for name, c in LAYOUT_COLOURS.items()]
    if any(r["diverged_at"] is not None for r in data["runs"]):
        handles.append(matplotlib.lines.Line2D([], [], color=BLACK, marker="x", linestyle="", label="loss went NaN"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=3,
        fontsize=12,
        title=(
            f"reverse task, N = {setup['layers']}, d_model {setup['d_model']}, plain Adam (β₂ 0.98), batch {setup['batch']}; "
            f"one line per seed (0-{data['seeds'] - 1}), smoothed; the numbers: held-out exact match per seed"
        ),
        title_fontsize=12,
    )
    fig.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    fig.savefig(path)


def draw_ln_warmup_file(results: Path = LN_RESULTS, out_dir: Path | None = None) -> Path:
    """Draw ln_warmup.png (into talk/figures/ unless out_dir is given) from a results file; its path."""
    out_dir = Path(out_dir) if out_dir is not None else FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ln_warmup.png"
    with matplotlib.rc_context(STYLE):
        draw_ln_warmup(path, ln_warmup_data(results))
    return path


# -----------------------------------------------------------------------------
# Translation: cross-attention of a German number, and beam search against greedy (translate.py)
# -----------------------------------------------------------------------------


@dataclass
class TranslationData:
    source: list[str]  # the German number's BPE pieces, then EOS
    target: list[str]  # the English pieces the model wrote, then EOS
    cross: np.ndarray  # (T, S): the last decoder layer's cross-attention, mean over the heads
    scores: dict[str, dict]  # "greedy", "beam 4": translate.score() on the held-out numbers
    steps: int
    averaged: int = AVERAGE_LAST  # how many of the last checkpoints the model is the average of


def translation_data(
    steps: int, numbers: int, seed: int = SEED, number: int = TRANSLATE_NUMBER, eval_examples: int | None = None
) -> TranslationData:
    """Train the numbers task with `translate.py train` and average (as `make translate` does), then read one number's
    cross-attention and score greedy decoding and beam 4 on the held-out numbers (the first eval_examples)."""
    import tempfile

    with tempfile.TemporaryDirectory() as run:
        argv = ["train", "--out", run, "--steps", str(steps), "--numbers", str(numbers), "--seed", str(seed)]
        keep = ["--save-every", str(AVERAGE_EVERY), "--keep", str(AVERAGE_LAST), "--threads", "1", "--quiet"]
        averaged = str(Path(run) / "averaged.pt")
        if tr.main([*argv, *keep]) != 0:
            raise ValueError("translate.py train failed")
        last = min(AVERAGE_LAST, len(tr.checkpoints(Path(run))))  # fewer when it trains only a few steps
        if tr.main(["average", run, "--last", str(last), "--out", averaged]) != 0:
            raise ValueError("translate.py average failed")
        _, _, model, tokenizer = tr.load_run(averaged)
        pairs = tr.read_tsv(Path(run) / "test.tsv")[:eval_examples]
    source, target, cross = decoding.cross_attention(model, tokenizer, corpora.german_number(number), beam=4, alpha=0.6)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    scores = {
        name: tr.score(tr.translate_texts(model, tokenizer, sources, beam, 0.6), references)
        for name, beam in (("greedy", 1), ("beam 4", 4))
    }
    return TranslationData(source, target, cross.numpy(), scores, steps, last)


def crossing_share(data: TranslationData) -> float:
    """How often the source piece a target word attends to most comes before the one of the word before it:
    a backward step, which is what writing German units-before-tens in English order takes."""
    peaks = data.cross.argmax(axis=1)  # (T,)
    steps = [b < a for a, b in zip(peaks[:-1], peaks[1:], strict=True)]
    return float(np.mean(steps)) if steps else 0.0


def draw_translation(path: Path, data: TranslationData) -> None:
    backwards = crossing_share(data) > 0
    title = (
        "German → English: cross-attention steps back where German writes units before tens"
        if backwards
        else "German → English: cross-attention of a German number"
    )
    fig, (left, right) = new_figure(title, ncols=2, gridspec_kw={"width_ratios": [1.6, 1]})
    image = left.imshow(data.cross, cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto")
    left.set_xticks(range(len(data.source)), [p.replace("▁", "_") for p in data.source], rotation=35, ha="right")
    left.set_yticks(range(len(data.target)), [p.replace("▁", "") for p in data.target])
    left.set_xlabel("key: German BPE piece")
    left.set_ylabel("query: the English piece written")
    left.set_title(f"{TRANSLATE_NUMBER:,}, last decoder layer, mean over the heads")
    fig.colorbar(image, ax=left, shrink=0.8, label="attention weight")
    names = list(data.scores)
    exact = [100 * data.scores[n]["exact"] / data.scores[n]["n"] for n in names]
    bleu = [data.scores[n]["bleu"] for n in names]
    x = np.arange(len(names))
    for offset, values, label, color in ((-0.2, exact, "exact match %", BLUE), (0.2, bleu, "BLEU", GREEN)):
        bars = right.bar(x + offset, values, width=0.4, label=label, color=color)
        right.bar_label(bars, fmt="%.1f", fontsize=14)
    low = min(exact + bleu)
    right.set_ylim(max(0.0, low - 5), 100.5)
    right.set_xticks(x, names)
    right.set_title(f"{data.scores[names[0]]['n']} held-out numbers")
    right.legend(loc="lower right")
    caption(
        fig,
        f"trained by translate.py for {data.steps} steps, the last {data.averaged} checkpoints averaged · "
        "beam search: beam 4, length penalty α = 0.6 (§6.1)",
    )
    fig.savefig(path)


# -----------------------------------------------------------------------------
# Multi30k: the model of `make translate-m30k`, from the snapshot talk/m30k.py keeps (talk/m30k.json)
# -----------------------------------------------------------------------------


M30K_SNAPSHOT = Path(__file__).resolve().parent / "m30k.json"  # committed; talk/m30k.py writes it from a run


def draw_m30k(path: Path, data: dict) -> None:
    attention, test = data["attention"], data["test2016"]
    fig, (left, right) = new_figure(
        # one line that fits the 16-inch figure: a longer suptitle runs off both edges (constrained layout does
        # not shrink it), which test_no_figure_is_cut_at_its_edges catches
        "Multi30k German → English: where the decoder looks, and how often answers loop",
        ncols=2,
        gridspec_kw={"width_ratios": [1.5, 1]},
    )
    image = left.imshow(np.array(attention["cross"]), cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto")
    left.set_xticks(
        range(len(attention["source"])), [p.replace("▁", "_") for p in attention["source"]], rotation=55, ha="right"
    )
    left.set_yticks(range(len(attention["target"])), [p.replace("▁", "") for p in attention["target"]])
    left.set_xlabel("key: German BPE piece")
    left.set_ylabel("query: the English piece written")
    left.set_title("test2016, sentence 1: last decoder layer, mean over heads", fontsize=16)
    fig.colorbar(image, ax=left, shrink=0.8, label="attention weight")
    steps = [v["step"] for v in data["validation"]]
    right.plot(steps, [v["valid_bleu"] for v in data["validation"]], marker="o", color=GREEN, label="BLEU (greedy)")
    right.set_xlabel("training step")
    right.set_ylabel("validation BLEU, greedy")
    loops = right.twinx()
    loops.spines["right"].set_visible(True)
    loops.plot(
        steps, [v["valid_looping"] for v in data["validation"]], marker="s", color=VERMILLION, label="answers that loop"
    )
    loops.set_ylabel("looping answers of 200")
    loops.set_ylim(bottom=0)
    right.set_title("greedy, first 200 validation sentences", fontsize=16)
    handles = right.get_legend_handles_labels()[0] + loops.get_legend_handles_labels()[0]
    right.legend(handles, [h.get_label() for h in handles], loc="center right")
    caption(
        fig,
        f"make translate-m30k: test2016 BLEU {test['bleu']:.1f} (sacreBLEU, cased), {test['bleu_lowercase']:.1f} "
        f"lowercased, beam {test['beam']}, after {data['train_minutes']:.1f} min of training on a CPU",
    )
    fig.savefig(path)


# -----------------------------------------------------------------------------
# The registry, and generate()
# -----------------------------------------------------------------------------


@dataclass
class Settings:
    demo_steps: int = DEMO_STEPS  # as many as `make demo` trains
    pitfall_steps: int = PITFALL_STEPS
    pitfall_batch: int = PITFALL_BATCH
    seed: int = SEED
    # worker processes for the pitfall runs, which then overlap with the other figures; 0 = all in this one
    workers: int = 0
    eval_examples: int | None = None  # held-out examples for the exact match in the title; None = all
    translate_steps: int = TRANSLATE_STEPS  # as many as `make translate` trains
    translate_numbers: int = 50_000  # training pairs of the numbers task, as translate.py's default


@dataclass
class Context:
    """What the figures share within one generate() call: the settings and the trained model, trained once."""

    settings: Settings
    on_train: Callable[[str, int, int], None] = lambda what, done, total: None
    pitfall_runs: PitfallRuns | None = None  # started early when the pitfall figure is wanted
    _trained: TrainedModel | None = field(default=None, repr=False)

    def trained(self) -> TrainedModel:
        if self._trained is None:
            steps = self.settings.demo_steps
            self._trained = train_demo_model(
                steps,
                self.settings.seed,
                on_step=lambda step, loss, lr: self.on_train("training", step, steps),
                eval_examples=self.settings.eval_examples,
            )
        return self._trained


def make_masks(ctx: Context, path: Path) -> None:
    draw_masks(path, mask_data(ctx.settings.seed))


def make_positional_encoding(ctx: Context, path: Path) -> None:
    draw_positional_encoding(path, positional_encoding_data())


def make_mha_shapes(ctx: Context, path: Path) -> None:
    draw_mha_shapes(path, mha_shapes_data(**SHAPE_SIZES, seed=ctx.settings.seed), shape_symbols(**SHAPE_SIZES))


def make_attention(ctx: Context, path: Path) -> None:
    trained = ctx.trained()
    i = pick_example(trained.test_src)
    data = attention_data(trained.model, trained.test_src[i : i + 1], trained.test_tgt[i : i + 1])
    draw_attention(path, data, trained.steps, trained.accuracy)


def make_scaling(ctx: Context, path: Path) -> None:
    draw_scaling(path, scaling_data(seed=ctx.settings.seed))


def make_residual(ctx: Context, path: Path) -> None:
    trained = ctx.trained()
    data = residual_stream_data(trained.model, trained.test_src[:200], trained.test_tgt[:200])
    draw_residual_stream(path, data, trained.model.config.d_model, trained.steps)


def make_pitfalls(ctx: Context, path: Path) -> None:
    s = ctx.settings
    runs = ctx.pitfall_runs or PitfallRuns(s.pitfall_steps, s.pitfall_batch, s.seed)
    curves = runs.curves(on_run=lambda done, total: ctx.on_train("pitfall runs", done, total))
    draw_pitfall_curves(path, curves, s.pitfall_batch)


def make_lr_schedule(ctx: Context, path: Path) -> None:
    draw_lr_schedule(path)


def make_ln_warmup(ctx: Context, path: Path) -> None:
    draw_ln_warmup(path, ln_warmup_data())


def make_m30k(ctx: Context, path: Path) -> None:
    draw_m30k(path, json.loads(M30K_SNAPSHOT.read_text(encoding="utf-8")))


def make_translation(ctx: Context, path: Path) -> None:
    s = ctx.settings
    draw_translation(
        path, translation_data(s.translate_steps, s.translate_numbers, s.seed, eval_examples=s.eval_examples)
    )


@dataclass(frozen=True)
class FigureSpec:
    name: str  # the file is talk/figures/<name>.png; the slides embed it by that name
    what: str
    make: Callable[[Context, Path], None]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("masks", "padding, causal and combined masks on a real example", make_masks),
    FigureSpec("positional_encoding", "the sinusoids of §3.5: heatmap and curves", make_positional_encoding),
    FigureSpec("mha_shapes", "shapes through multi-head attention, from a forward pass", make_mha_shapes),
    FigureSpec("attention_heatmaps", "attention maps of the trained demo model", make_attention),
    FigureSpec("scaling", "why 1/√d_k: softmax saturation", make_scaling),
    FigureSpec("residual_stream", "residual-stream norms at every Add & Norm", make_residual),
    FigureSpec("pitfall_training_curves", "the correct model against the silent pitfalls", make_pitfalls),
    FigureSpec("lr_schedule", "the learning-rate schedule of Eq. (3)", make_lr_schedule),
    FigureSpec("translation", "cross-attention of a German number, beam 4 against greedy", make_translation),
    FigureSpec("ln_warmup", "post-LN against pre-LN across warm-up (experiments/ln_warmup.json)", make_ln_warmup),
    FigureSpec("m30k", "Multi30k: a real sentence's cross-attention, looping by step (talk/m30k.json)", make_m30k),
)
NAMES = tuple(spec.name for spec in FIGURES)


@dataclass
class Result:
    name: str
    path: Path
    seconds: float
    width: int
    height: int


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if the file is not a PNG."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def generate(
    names: Sequence[str] | None = None,
    out_dir: Path | str = FIGURES_DIR,
    settings: Settings | None = None,
    on_figure: Callable[[str], None] | None = None,
    on_train: Callable[[str, int, int], None] | None = None,
) -> list[Result]:
    """Write the named figures (all by default) as <out_dir>/<name>.png and return what was written.
    on_figure(name) is called before each figure, on_train(what, done, total) while a model trains."""
    wanted = list(NAMES if names is None else names)
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        raise ValueError(f"no figure named {', '.join(map(repr, unknown))}; the figures are {', '.join(NAMES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(settings or Settings())
    if on_train is not None:
        ctx.on_train = on_train
    s = ctx.settings
    if "pitfall_training_curves" in wanted and s.workers > 0:
        ctx.pitfall_runs = PitfallRuns(s.pitfall_steps, s.pitfall_batch, s.seed, s.workers)
        ctx.on_train("pitfall runs", 0, len(ctx.pitfall_runs.runs))  # they run from now on
    # the pitfall figure last: its runs may still be going on in the background
    order = sorted((spec for spec in FIGURES if spec.name in wanted), key=lambda spec: spec.make is make_pitfalls)
    results = []
    try:
        with matplotlib.rc_context(STYLE), torch_threads(1):
            for spec in order:
                if on_figure is not None:
                    on_figure(spec.name)
                path = out_dir / f"{spec.name}.png"
                start = time.perf_counter()
                spec.make(ctx, path)
                results.append(Result(spec.name, path, time.perf_counter() - start, *png_size(path)))
    finally:
        if ctx.pitfall_runs is not None:
            ctx.pitfall_runs.close()
    return results


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = tf.OneLineParser(prog=PROG, description="Draw the talk's figures from the real code.")
    parser.add_argument(
        "--only", action="append", choices=NAMES, metavar="NAME", help=f"one figure (repeatable): {', '.join(NAMES)}"
    )
    parser.add_argument("--out", type=Path, default=FIGURES_DIR, help="output folder (default: talk/figures)")
    parser.add_argument(
        "--steps",
        type=tf.positive_int,
        default=DEMO_STEPS,
        help=f"training steps of the demo model (as make demo: {DEMO_STEPS})",
    )
    parser.add_argument(
        "--pitfall-steps", type=tf.positive_int, default=PITFALL_STEPS, help=f"steps per pitfall run ({PITFALL_STEPS})"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1 if (os.cpu_count() or 1) > 1 else 0,
        help="worker processes that train the pitfall runs alongside the other figures; 0 = none (default: 1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if args.workers < 0:
        print(f"{PROG}: error: --workers must be 0 or more, got {args.workers}", file=sys.stderr)
        return 2
    settings = Settings(demo_steps=args.steps, pitfall_steps=args.pitfall_steps, workers=args.workers)
    names = args.only or list(NAMES)
    start = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[str, int] = {}

    def on_train(what: str, done: int, total: int) -> None:
        if what not in bars:
            bars[what] = progress.add_task(f"  {what}", total=total)
        progress.update(bars[what], completed=done)

    with progress:
        overall = progress.add_task("figures", total=len(names))

        def on_figure(name: str) -> None:
            progress.update(overall, description=f"figures: {name}", completed=len(done))
            done.append(name)

        done: list[str] = []
        try:  # a pitfall whose edit no longer applies to transformer.py: one line, not a traceback
            from debug_pitfalls import PitfallDriftError as drift_error
        except ImportError:
            drift_error = ImportError
        try:
            results = generate(names, args.out, settings, on_figure=on_figure, on_train=on_train)
        except (ImportError, OSError, ValueError, drift_error) as error:
            progress.stop()
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
        progress.update(overall, description="figures", completed=len(names))
    table = Table(title=f"figures written to {args.out}")
    table.add_column("file")
    for column in ("pixels", "KB", "seconds"):
        table.add_column(column, justify="right")
    for result in results:
        table.add_row(
            result.path.name,
            f"{result.width}×{result.height}",
            f"{result.path.stat().st_size / 1024:.0f}",
            f"{result.seconds:.1f}",
        )
    console.print(table)
    console.print(f"{len(results)} figures in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
