"""Stage 1 of 12: Embeddings (§3.4).

Adds `TokenEmbedding`: a learned vector of d_model numbers for every token id (an `nn.Embedding`),
multiplied by sqrt(d_model) as §3.4 says. Look at `forward`: that multiplication is the whole
difference from a plain `nn.Embedding`. The demo embeds a small batch and shows the shapes and that
every output entry is the looked-up entry times sqrt(d_model).

This file is transformer.py up to the end of its stage 1 section, then a demo of its own.
Everything above the stage 1 section is shared by every stage: the imports (some are used only by
later stages) and `TransformerConfig`, the hyper-parameters of the paper's Table 3.

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

Run it: make stage N=1   (or: .venv/bin/python stages/01_embeddings.py)

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
# Demo of this stage (not part of transformer.py)
# -----------------------------------------------------------------------------


def demo() -> None:
    torch.manual_seed(0)
    vocab_size, d_model = 10, 8
    embed = TokenEmbedding(vocab_size, d_model)
    tokens = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])  # (B, L) = (2, 5)
    with torch.no_grad():
        out = embed(tokens)  # (B, L, D)
        ratio = out / embed.weight[tokens]  # against the plain lookup, entry by entry

    table = Table(title="Stage 1: token embeddings (§3.4)")
    table.add_column("what")
    table.add_column("value")
    table.add_row("token ids (B, L)", str(tuple(tokens.shape)))
    table.add_row("embedded (B, L, D)", str(tuple(out.shape)))
    table.add_row("scale = sqrt(d_model)", f"sqrt({d_model}) = {embed.scale:.4f}")
    table.add_row("output / plain lookup", f"min {ratio.min():.4f}, max {ratio.max():.4f}")
    same = torch.equal(out[0, 1], out[0, 3])
    table.add_row("token 1 at positions 1 and 3", "same vector" if same else "different vectors")
    table.add_row("learned numbers (V x D)", f"{embed.weight.numel()} = {vocab_size} x {d_model}")
    Console().print(table)
    print("The same token gets the same vector wherever it stands: nothing says where it is yet (stage 2).")


if __name__ == "__main__":
    demo()
