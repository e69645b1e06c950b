"""Stage 3 of 12: Scaled dot-product attention (§3.2.1, Eq. (1)).

Adds `scaled_dot_product_attention`, Eq. (1), and `check_mask`, which rejects a mask that is not
boolean or does not fit the scores. Look at the division by sqrt(d_k) (the paper's footnote 4) and
at the two uses of the mask: masked scores become the most negative float before the softmax, and
masked weights are set to exactly 0 after it. The demo prints the weights of a tiny example: every
row sums to 1, a masked key gets weight 0, the output matches `F.scaled_dot_product_attention`, and
unscaled scores spread like sqrt(d_k).

This file is transformer.py up to the end of its stage 3 section, then a demo of its own.
`make diff FROM=2 TO=3` shows exactly what this stage adds to stage 2.

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

Run it: make stage N=3   (or: .venv/bin/python stages/03_attention.py)

Deviations from the paper so far (numbered as in transformer.py):
3. A query whose keys are all masked (an all-padding source) attends to nothing and gets a zero
   vector, as `F.scaled_dot_product_attention` returns, instead of 0/0 = NaN.
(The paper does not say how to initialise weights: until stage 10 sets the model's
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
# Stage 3 · Scaled dot-product attention · §3.2.1, Eq. (1)
# -----------------------------------------------------------------------------


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Eq. (1): Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    query (..., T_q, d_k), key (..., T_k, d_k), value (..., T_k, d_v); mask: boolean, True = may
    attend, broadcastable to (..., T_q, T_k). Returns the output (..., T_q, d_v) and the
    attention weights (..., T_q, T_k).
    """
    d_k = query.size(-1)
    # Without the 1/sqrt(d_k) the dot products grow with d_k and push the softmax into
    # regions with vanishing gradients (the paper's footnote 4).
    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, d_k) x (..., d_k, T_k) -> (..., T_q, T_k)
    if mask is not None:
        check_mask(mask, scores.shape)
        # The most negative finite number rather than -inf: exp() of it is exactly 0 in any
        # float dtype, and a row with every key masked stays finite instead of 0/0 = NaN.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # (..., T_q, T_k)
    weights = scores.softmax(dim=-1)  # (..., T_q, T_k), each row sums to 1 over the keys
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # a fully masked row attends to nothing
    return weights @ value, weights  # (..., T_q, T_k) x (..., T_k, d_v) -> (..., T_q, d_v)


def check_mask(mask: Tensor, scores_shape: torch.Size) -> None:
    """A mask must be boolean and broadcast to the scores without growing them."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"attention mask must be a torch.bool tensor (True = may attend), got {got}")
    # broadcasting: aligned from the right, each mask size is 1 or the scores' size
    fits = mask.dim() <= len(scores_shape) and all(
        m in (1, s) for m, s in zip(reversed(mask.shape), reversed(scores_shape), strict=False)
    )
    if not fits:
        raise ValueError(
            f"attention mask of shape {tuple(mask.shape)} cannot broadcast to the attention scores "
            f"of shape {tuple(scores_shape)} (batch, heads, queries, keys)"
        )


# -----------------------------------------------------------------------------
# Demo of this stage (not part of transformer.py)
# -----------------------------------------------------------------------------


def demo() -> None:
    torch.manual_seed(0)
    console = Console()
    q = torch.randn(1, 3, 4)  # (B, T_q, d_k): three queries
    k = torch.randn(1, 4, 4)  # (B, T_k, d_k): four keys
    v = torch.randn(1, 4, 2)  # (B, T_k, d_v)
    mask = torch.tensor([True, True, True, False])[None, None, :]  # (1, 1, T_k): key 3 is hidden

    for title, m in (("no mask", None), ("key 3 masked", mask)):
        out, weights = scaled_dot_product_attention(q, k, v, m)  # (1, 3, 2), (1, 3, 4)
        table = Table(title=f"Stage 3: attention weights, {title}")
        table.add_column("query")
        for j in range(4):
            table.add_column(f"key {j}", justify="right")
        table.add_column("row sum", justify="right")
        for i in range(3):
            row = weights[0, i]
            table.add_row(str(i), *(f"{w:.4f}" for w in row.tolist()), f"{row.sum().item():.4f}")
        console.print(table)
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        print(f"{title}: max |ours - F.scaled_dot_product_attention| = {(out - reference).abs().max().item():.1e}")

    nothing = torch.zeros(1, 1, 4, dtype=torch.bool)  # every key masked
    out, _ = scaled_dot_product_attention(q[:, :1], k, v, nothing)
    print(f"a query with every key masked gets {out[0, 0].tolist()} (deviation 3), not NaN")

    table = Table(title="why divide by sqrt(d_k): std of q·k over 4000 random pairs")
    for column in ("d_k", "std of q·k", "sqrt(d_k)", "std of q·k / sqrt(d_k)"):
        table.add_column(column, justify="right")
    for d_k in (4, 64, 512):
        qs, ks = torch.randn(4000, d_k), torch.randn(4000, d_k)
        dots = (qs * ks).sum(-1)  # (4000,)
        table.add_row(
            str(d_k), f"{dots.std().item():.2f}", f"{math.sqrt(d_k):.2f}", f"{(dots / math.sqrt(d_k)).std().item():.2f}"
        )
    console.print(table)


if __name__ == "__main__":
    demo()
