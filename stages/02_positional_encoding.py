"""Stage 2 of 12: Positional encoding (§3.5).

Adds `PositionalEncoding`: the fixed table of sines and cosines of §3.5, added to the token
embeddings so that the model can tell positions apart. Look at how the table is built once, in
float64, with sin in the even dimensions and cos in the odd ones, and kept as a buffer, not a
parameter. The demo compares entries with the closed form and shows that the dot product of two
encodings depends only on their distance, and falls as the distance grows over the distances shown
(it ripples rather than falling strictly at every distance).

This file is transformer.py up to the end of its stage 2 section, then a demo of its own.
`make diff FROM=1 TO=2` shows exactly what this stage adds to stage 1.

Shape legend, used by every shape comment below:
    B      batch size
    S      source length                T      target length
    L      either length, where a piece serves the encoder and the decoder alike
    D      d_model, the width of every residual stream
    H      number of heads (the paper's h)
    d_k    width of one head, D / H (the paper's d_k = d_v)
    F      d_ff, the inner width of the feed-forward network
    V      vocabulary size
    T_q    query length inside attention; T_k key (and value) length

Masks: a boolean mask says where attention MAY look. True = may attend, False = ignore,
the way `torch.nn.functional.scaled_dot_product_attention` reads it (`nn.MultiheadAttention`
reads its boolean masks the other way round). Masks broadcast against the scores (B, H, T_q, T_k).

Run it: make stage N=2   (or: .venv/bin/python stages/02_positional_encoding.py)

Deviations from the paper so far (numbered as in transformer.py):
None yet. (The paper does not say how to initialise weights: until stage 10 sets the model's
initialisation, every module keeps PyTorch's default.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor, nn


@dataclass
class TransformerConfig:
    """Hyper-parameters, named as in the paper (Table 3). The defaults are the base model."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512  # D, width of every sub-layer output and embedding
    n_heads: int = 8  # h, parallel attention heads
    n_layers: int = 6  # N, identical layers in the encoder and again in the decoder
    d_ff: int = 2048  # inner width of the feed-forward network
    dropout: float = 0.1  # P_drop
    max_len: int = 512  # longest sequence the positional encoding covers
    pad_id: int = 0  # the padding token, in both vocabularies
    label_smoothing: float = 0.1  # epsilon_ls
    warmup_steps: int = 4000  # of the learning-rate schedule, Eq. (3)
    lr_factor: float = 1.0  # not in the paper: scales Eq. (3)'s rate, whose peak d_model and warm-up otherwise fix

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads so each head gets d_k = d_model / n_heads, "
                f"got d_model={self.d_model} and n_heads={self.n_heads}"
            )
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (the positional encoding pairs sin and cos), got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(
                f"pad_id must be a token of both vocabularies, in [0, {min(self.src_vocab_size, self.tgt_vocab_size)}), "
                f"got {self.pad_id}"
            )
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be a positive integer, got {self.warmup_steps!r}")
        if not self.lr_factor > 0:
            raise ValueError(f"lr_factor must be > 0 (1 is the paper's schedule), got {self.lr_factor!r}")

    @property
    def d_k(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def paper_base(cls, src_vocab_size: int, tgt_vocab_size: int, **overrides) -> TransformerConfig:
        """Table 3, "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, eps_ls=0.1."""
        return cls(src_vocab_size, tgt_vocab_size, **overrides)

    @classmethod
    def paper_big(cls, src_vocab_size: int, tgt_vocab_size: int, **overrides) -> TransformerConfig:
        """Table 3, "big": N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3, eps_ls=0.1."""
        settings = dict(d_model=1024, n_heads=16, d_ff=4096, dropout=0.3) | overrides
        return cls(src_vocab_size, tgt_vocab_size, **settings)


# -----------------------------------------------------------------------------
# Stage 1 · Embeddings · §3.4
# -----------------------------------------------------------------------------


class TokenEmbedding(nn.Module):
    """§3.4: a learned vector per token, multiplied by sqrt(d_model)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.scale = math.sqrt(d_model)

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight  # (V, D)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embedding(tokens) * self.scale  # (B, L) -> (B, L, D)


# -----------------------------------------------------------------------------
# Stage 2 · Positional encoding · §3.5
# -----------------------------------------------------------------------------


class PositionalEncoding(nn.Module):
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Fixed, not learned, so it is a buffer: it moves with the model between devices and dtypes
    but the optimiser never sees it.
    """

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        # float64 for the table, so that positions in the hundreds keep their precision
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (D/2,)
        angle = pos / 10000 ** (two_i / d_model)  # (max_len, 1) / (D/2,) -> (max_len, D/2)
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)  # (max_len, D)
        pe[:, 0::2] = torch.sin(angle)  # even dimensions
        pe[:, 1::2] = torch.cos(angle)  # odd dimensions
        self.register_buffer("pe", pe.float(), persistent=False)  # (max_len, D)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.size(1)]  # (B, L, D) + (L, D) -> (B, L, D)


# -----------------------------------------------------------------------------
# Demo of this stage (not part of transformer.py)
# -----------------------------------------------------------------------------


def demo() -> None:
    d_model, max_len = 16, 64
    encoding = PositionalEncoding(d_model, max_len)
    pe = encoding.pe  # (max_len, D)

    def closed_form(pos: int, dim: int) -> float:
        angle = pos / 10000 ** (2 * (dim // 2) / d_model)
        return math.sin(angle) if dim % 2 == 0 else math.cos(angle)

    table = Table(title="Stage 2: PE\\[pos, dim] (§3.5) against the closed form")  # rich markup: "\\[" prints "["
    for column in ("pos", "dim", "PE buffer", "closed form"):
        table.add_column(column, justify="right")
    for pos in (0, 1, 10, 63):
        for dim in (0, 1, 6, 7):
            table.add_row(str(pos), str(dim), f"{pe[pos, dim].item():+.6f}", f"{closed_form(pos, dim):+.6f}")
    console = Console()
    console.print(table)
    worst = max(abs(pe[p, d].item() - closed_form(p, d)) for p in range(max_len) for d in range(d_model))
    print(f"max |PE - closed form| over all {max_len} x {d_model} entries: {worst:.1e}")

    table = Table(title="dot products of two encodings k positions apart")
    for column in ("k", "PE\\[0]·PE\\[k]", "PE\\[20]·PE\\[20+k]"):
        table.add_column(column, justify="right")
    for k in (0, 1, 2, 4, 8, 16, 32):
        table.add_row(str(k), f"{(pe[0] @ pe[k]).item():.4f}", f"{(pe[20] @ pe[20 + k]).item():.4f}")
    console.print(table)
    print("Both columns agree: the dot product depends only on the distance k, and falls as k grows here.")

    x = torch.zeros(1, 5, d_model)  # (B, L, D): all-zero "embeddings"
    print(f"added to zero embeddings it gives PE[:5] back: {torch.equal(encoding(x)[0], pe[:5])}")
    n_params = sum(p.numel() for p in encoding.parameters())
    print(f"learned parameters: {n_params} (the table is a buffer of shape {tuple(pe.shape)})")


if __name__ == "__main__":
    demo()
