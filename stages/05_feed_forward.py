"""Stage 5 of 12: Position-wise feed-forward network (§3.3, Eq. (2)).

Adds `PositionwiseFeedForward`, Eq. (2): Linear(D -> F), ReLU, Linear(F -> D), the same two maps
applied to every position on its own. Look at `forward`: one line; attention mixes positions, this
never does. The demo shows the shapes, checks the output against Eq. (2) written out, counts the
parameters, and shows that changing the other positions leaves a position's output unchanged.

This file is transformer.py up to the end of its stage 5 section, then a demo of its own.
`make diff FROM=4 TO=5` shows exactly what this stage adds to stage 4.

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

Run it: make stage N=5   (or: .venv/bin/python stages/05_feed_forward.py)

Deviations from the paper so far (numbered as in transformer.py):
1. The linear maps of attention and of the feed-forward network carry biases; the paper's
   equations show only weights. PyTorch's `nn.Transformer` has them too, which lets the tests
   prove that the two models compute the same function.
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
# Stage 4 · Multi-head attention · §3.2.2
# -----------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    where head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h projections to d_k dimensions are stored side by side as one D x D matrix each,
    so one matmul computes all heads, and a reshape splits them apart.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={d_model} and n_heads={n_heads}")
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model)  # W^Q for all heads
        self.w_k = nn.Linear(d_model, d_model)  # W^K for all heads
        self.w_v = nn.Linear(d_model, d_model)  # W^V for all heads
        self.w_o = nn.Linear(d_model, d_model)  # W^O
        self.keep_weights = False  # set True to keep the last attention weights (for plots)
        self.last_weights: Tensor | None = None

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        q = self.split_heads(self.w_q(query))  # (B, T_q, D) -> (B, H, T_q, d_k)
        k = self.split_heads(self.w_k(key))  # (B, T_k, D) -> (B, H, T_k, d_k)
        v = self.split_heads(self.w_v(value))  # (B, T_k, D) -> (B, H, T_k, d_k)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T_q, d_k), (B, H, T_q, T_k)
        if self.keep_weights:
            self.last_weights = weights.detach()
        return self.w_o(self.merge_heads(out))  # (B, H, T_q, d_k) -> (B, T_q, D)

    def split_heads(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        x = x.view(B, L, self.n_heads, self.d_k)  # (B, L, D) -> (B, L, H, d_k)
        return x.transpose(1, 2)  # (B, L, H, d_k) -> (B, H, L, d_k): heads become a batch dim

    def merge_heads(self, x: Tensor) -> Tensor:
        B, _, L, _ = x.shape
        x = x.transpose(1, 2)  # (B, H, L, d_k) -> (B, L, H, d_k)
        # reshape, not view: after the transpose the memory is no longer contiguous
        return x.reshape(B, L, self.n_heads * self.d_k)  # (B, L, H, d_k) -> (B, L, D)


# -----------------------------------------------------------------------------
# Stage 5 · Position-wise feed-forward network · §3.3, Eq. (2)
# -----------------------------------------------------------------------------


class PositionwiseFeedForward(nn.Module):
    """Eq. (2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(torch.relu(self.w_1(x)))  # (B, L, D) -> (B, L, F) -> (B, L, D)


# -----------------------------------------------------------------------------
# Demo of this stage (not part of transformer.py)
# -----------------------------------------------------------------------------


def demo() -> None:
    torch.manual_seed(0)
    B, L, d_model, d_ff = 2, 5, 8, 32
    ffn = PositionwiseFeedForward(d_model, d_ff)
    x = torch.randn(B, L, d_model)  # (B, L, D)
    with torch.no_grad():
        hidden = torch.relu(ffn.w_1(x))  # (B, L, F)
        out = ffn(x)  # (B, L, D)
        # Eq. (2) written out: max(0, x W_1 + b_1) W_2 + b_2 (nn.Linear stores W transposed)
        eq2 = torch.clamp(x @ ffn.w_1.weight.T + ffn.w_1.bias, min=0) @ ffn.w_2.weight.T + ffn.w_2.bias
        others = x.clone()
        others[:, 1:] = torch.randn(B, L - 1, d_model)  # new values everywhere but position 0
        out_others = ffn(others)

    table = Table(title=f"Stage 5: position-wise feed-forward network, d_model={d_model}, d_ff={d_ff}")
    table.add_column("step")
    table.add_column("shape")
    table.add_row("x (B, L, D)", str(tuple(x.shape)))
    table.add_row("ReLU(w_1(x)) (B, L, F)", str(tuple(hidden.shape)))
    table.add_row("w_2(...) (B, L, D)", str(tuple(out.shape)))
    Console().print(table)
    print(f"max |ffn(x) - Eq. (2)| = {(out - eq2).abs().max().item():.1e}")
    print(f"other positions changed -> change at position 0: {(out_others[:, 0] - out[:, 0]).abs().max().item():.1e}")
    print(f"                        -> change at position 1: {(out_others[:, 1] - out[:, 1]).abs().max().item():.1e}")
    print(f"hidden units the ReLU set to zero: {(hidden == 0).float().mean().item():.0%}")
    n_params = sum(p.numel() for p in ffn.parameters())
    print(f"parameters: {n_params} = 2 x D x F + F + D = 2 x {d_model} x {d_ff} + {d_ff} + {d_model}")


if __name__ == "__main__":
    demo()
