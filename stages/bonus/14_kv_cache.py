"""Bonus stage 14: Key/value cache for greedy decoding and beam search (beyond the paper; §3.2.3).

transformer.py with one addition: `cached_greedy_decode` and `cached_beam_search`, which write the same
tokens as `greedy_decode` and `beam_search` with less work. Plain decoding re-runs the decoder over every
token written so far at each step, so writing n tokens costs O(n^2) token passes. But the decoder's
self-attention is masked (§3.2.3): position i never sees a later position, so once written, its keys and
values in every layer never change. Keep them (the cache), and each step only has to run the decoder on
the one new token, against the kept keys and values. The encoder runs once, and the cross-attention keys
and values of its output are computed once per layer.

Beam search adds a twist: at each step topk picks which hypotheses go on, and two may extend the same one.
The cache has to follow them: `KeyValueCache.reorder(rows)` keeps the rows of the chosen hypotheses, in
their new order (the encoder side is kept once per sentence, and its K hypotheses query it together).
The same call lets a sentence whose answer is decided (by beam_search's rule, or by eos_id or its own
max_len in greedy decoding) leave the batch, so later steps compute only the sentences still undecided.
The ranking is beam_search's, line for line: the two sit side by side in this file so you can compare
them, and tests/test_bonus.py holds them to the same tokens and scores. translate.py decodes with this
file's two functions (translation/decoding.py loads them from here; nothing is copied). The demo checks the tokens against greedy_decode's
and beam_search's, with padding in the source and sentences that end at different steps, and times both.

This file is transformer.py with that addition (its own section at the end), then a demo of its own.
`make diff FROM=12 TO=14` (or `diff transformer.py stages/bonus/14_kv_cache.py`) shows it.

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

Every deviation from the paper:
1. The linear maps of attention and of the feed-forward network carry biases; the paper's
   equations show only weights. PyTorch's `nn.Transformer` has them too, which lets the tests
   prove that the two models compute the same function.
2. Initialisation, which the paper leaves open: Xavier-uniform for every matrix, and
   N(0, 1/d_model) for the shared embedding, so that after the multiplication by sqrt(d_model)
   of §3.4 a token vector has the same scale as its positional encoding.
3. A query whose keys are all masked (an all-padding source) attends to nothing and gets a zero
   vector, as `F.scaled_dot_product_attention` returns, instead of 0/0 = NaN.
4. The source embedding is shared with the target embedding only when the two vocabularies
   have the same size (the paper's shared BPE vocabulary); the target embedding and the
   pre-softmax projection always share one matrix.
5. The demo trains its toy model with AMSGrad, Adam that remembers the largest second moment
   (`make_optimizer(..., amsgrad=True)`): with the paper's beta_2 = 0.98, a small model that has
   solved its task can collapse a few steps later (measured: 99.9% exact match to 0% in 10 steps).
6. The toy demo decodes greedily (`greedy_decode`), which its task needs no more than. The
   paper's decoding, beam search with beam 4 and length penalty alpha = 0.6 (§6.1), is
   `beam_search`; `translate.py` uses it, and averages the last checkpoints as §6.1 does.
   §6.1 leaves open what the beam does with a hypothesis that ends: ours finishes it and keeps
   beam_size live ones beside it, as fairseq does, but unlike fairseq it does not decide a sentence
   once beam_size hypotheses have finished, only once no live one can beat its answer (or at its
   max_len): early side hypotheses that end fill those slots before the right answer ends (numbers
   task, beam 4: 918/1000 exact with fairseq's rule, 962 without, greedy 956). §6.1 caps an output
   at its input length + 50; our max_len is one cap for the batch or a tensor of one per sentence.
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
# Stage 6 · Residual connection, dropout and layer normalisation · §3.1, §5.4
# -----------------------------------------------------------------------------


class AddAndNorm(nn.Module):
    """§3.1 and §5.4: LayerNorm(x + Dropout(Sublayer(x))), the "Add & Norm" boxes of Figure 1.

    Post-LN, as in the paper: the norm comes after the residual sum. (Most later models, and
    the Annotated Transformer, normalise before the sub-layer instead: pre-LN.)
    """

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        return self.norm(x + self.dropout(sublayer_out))  # (B, L, D) + (B, L, D) -> (B, L, D)


# -----------------------------------------------------------------------------
# Stage 7 · Encoder · §3.1
# -----------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """§3.1: multi-head self-attention, then the feed-forward network, each wrapped in Add & Norm."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.add_norm_1 = AddAndNorm(config.d_model, config.dropout)
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff)
        self.add_norm_2 = AddAndNorm(config.d_model, config.dropout)

    def forward(self, x: Tensor, src_mask: Tensor | None = None) -> Tensor:
        x = self.add_norm_1(x, self.self_attn(x, x, x, src_mask))  # (B, S, D)
        return self.add_norm_2(x, self.feed_forward(x))  # (B, S, D)


class Encoder(nn.Module):
    """§3.1: a stack of N identical encoder layers."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))

    def forward(self, x: Tensor, src_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, src_mask)  # (B, S, D) -> (B, S, D)
        return x


# -----------------------------------------------------------------------------
# Stage 8 · Masks: padding and subsequent positions · §3.2.3
# -----------------------------------------------------------------------------


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """No query may attend to a padding key. True = may attend."""
    return (tokens != pad_id)[:, None, None, :]  # (B, L) -> (B, 1, 1, L): same for every head and query


def subsequent_mask(size: int, device: torch.device | str | None = None) -> Tensor:
    """§3.2.3: decoder position i may attend to positions <= i only, which keeps decoding
    auto-regressive: a prediction never sees the token it has to predict."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, T, T)


def target_mask(tgt: Tensor, pad_id: int) -> Tensor:
    """The decoder's self-attention mask: no padding keys and no future positions."""
    return padding_mask(tgt, pad_id) & subsequent_mask(
        tgt.size(1), tgt.device
    )  # (B, 1, 1, T) & (1, 1, T, T) -> (B, 1, T, T)


# -----------------------------------------------------------------------------
# Stage 9 · Decoder · §3.1
# -----------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    """§3.1: masked self-attention, then attention over the encoder output ("encoder-decoder
    attention", §3.2.3), then the feed-forward network, each wrapped in Add & Norm."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.add_norm_1 = AddAndNorm(config.d_model, config.dropout)
        self.cross_attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.add_norm_2 = AddAndNorm(config.d_model, config.dropout)
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff)
        self.add_norm_3 = AddAndNorm(config.d_model, config.dropout)

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None) -> Tensor:
        x = self.add_norm_1(x, self.self_attn(x, x, x, tgt_mask))  # (B, T, D)
        # queries from the decoder, keys and values from the encoder output ("memory")
        x = self.add_norm_2(x, self.cross_attn(x, memory, memory, src_mask))  # (B, T, D) with (B, S, D) -> (B, T, D)
        return self.add_norm_3(x, self.feed_forward(x))  # (B, T, D)


class Decoder(nn.Module):
    """§3.1: a stack of N identical decoder layers."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)  # (B, T, D) -> (B, T, D)
        return x


# -----------------------------------------------------------------------------
# Stage 10 · The full encoder-decoder, with shared embeddings · §3, §3.4
# -----------------------------------------------------------------------------


class Transformer(nn.Module):
    """Figure 1: embed and encode the source; embed the target and decode it against the encoder
    output; project to the vocabulary. `model(src, tgt)` returns logits (B, T, V_tgt)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.tgt_embed = TokenEmbedding(config.tgt_vocab_size, config.d_model)
        shared_vocab = config.src_vocab_size == config.tgt_vocab_size
        self.src_embed = self.tgt_embed if shared_vocab else TokenEmbedding(config.src_vocab_size, config.d_model)
        self.pos_encoding = PositionalEncoding(config.d_model, config.max_len)
        self.embed_dropout = nn.Dropout(config.dropout)  # §5.4: dropout on embeddings + encodings
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # the "pre-softmax linear transformation" of §3.4: no bias, weight shared with the embedding
        self.generator = nn.Linear(config.d_model, config.tgt_vocab_size, bias=False)
        self._init_weights()
        self.generator.weight = self.tgt_embed.weight  # one Parameter, not a copy: (V_tgt, D)

    def _init_weights(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for embed in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(embed.weight, std=self.config.d_model**-0.5)

    def embed(self, embedding: TokenEmbedding, tokens: Tensor) -> Tensor:
        """§3.4, §3.5, §5.4: token embedding, plus positional encoding, then dropout."""
        return self.embed_dropout(self.pos_encoding(embedding(tokens)))  # (B, L) -> (B, L, D)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """The encoder alone, for decoding loops: src (B, S) -> memory (B, S, D)."""
        self._check_tokens("src", src, self.config.src_vocab_size)
        return self.encoder(self.embed(self.src_embed, src), src_mask)  # (B, S, D)

    def decode(self, tgt: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None) -> Tensor:
        """The decoder alone, for decoding loops: tgt (B, T) against memory (B, S, D) -> (B, T, D)."""
        self._check_tokens("tgt", tgt, self.config.tgt_vocab_size)
        if tgt.size(0) != memory.size(0):
            raise ValueError(
                f"src and tgt must have the same batch size, got {memory.size(0)} source and {tgt.size(0)} target sequences"
            )
        return self.decoder(self.embed(self.tgt_embed, tgt), memory, src_mask, tgt_mask)  # (B, T, D)

    def forward(
        self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None
    ) -> Tensor:
        """src (B, S) and tgt (B, T) token ids -> logits (B, T, V_tgt). Masks default to padding
        (and, for the target, subsequent positions); pass your own to override them."""
        self._check_tokens("src", src, self.config.src_vocab_size)
        self._check_tokens("tgt", tgt, self.config.tgt_vocab_size)
        if src.size(0) != tgt.size(0):
            raise ValueError(
                f"src and tgt must have the same batch size, got {src.size(0)} source and {tgt.size(0)} target sequences"
            )
        if src_mask is None:
            src_mask = padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)
        if tgt_mask is None:
            tgt_mask = target_mask(tgt, self.config.pad_id)  # (B, 1, T, T)
        # the tokens are checked above, once: from here on the unchecked parts, not encode() and decode()
        memory = self.encoder(self.embed(self.src_embed, src), src_mask)  # (B, S) -> (B, S, D)
        out = self.decoder(self.embed(self.tgt_embed, tgt), memory, src_mask, tgt_mask)  # (B, T) -> (B, T, D)
        return self.generator(out)  # (B, T, D) -> (B, T, V_tgt)

    def _check_tokens(self, name: str, tokens: Tensor, vocab_size: int) -> None:
        """Fail early, naming what was expected, instead of deep inside an embedding lookup."""
        if not isinstance(tokens, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {tokens.dtype}")
        if tokens.dim() != 2:
            raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(tokens.shape)}")
        if tokens.size(1) == 0:
            raise ValueError(f"{name} must hold at least one token per sequence, got shape {tuple(tokens.shape)}")
        if tokens.size(1) > self.config.max_len:
            raise ValueError(f"{name} has length {tokens.size(1)}, longer than max_len={self.config.max_len}")
        if tokens.numel():
            low, high = tokens.min().item(), tokens.max().item()
            if low < 0 or high >= vocab_size:
                bad = low if low < 0 else high
                raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")


# -----------------------------------------------------------------------------
# Stage 11 · Training: label smoothing, Adam and the warm-up schedule · §5.3, §5.4, Eq. (3)
# -----------------------------------------------------------------------------


def label_smoothed_loss(logits: Tensor, target: Tensor, smoothing: float, pad_id: int) -> Tensor:
    """§5.4: cross-entropy against a smoothed target distribution, averaged over non-padding tokens.

    The true token gets 1 - eps; eps is spread evenly over every other token except padding,
    which the model should never predict. With eps = 0 this is plain cross-entropy.
    logits (B, T, V) and target (B, T) -> a scalar.
    """
    V = logits.size(-1)
    log_probs = logits.log_softmax(dim=-1).flatten(0, -2)  # (B, T, V) -> (B*T, V)
    target = target.flatten()  # (B, T) -> (B*T,)
    q = torch.full_like(log_probs, smoothing / (V - 2))  # (B*T, V): eps over V minus (true, padding)
    q[:, pad_id] = 0.0  # padding is never a target
    q.scatter_(1, target[:, None], 1.0 - smoothing)  # (B*T, V)
    loss = -(q * log_probs).sum(dim=-1)  # (B*T,)
    keep = target != pad_id  # (B*T,)
    return loss[keep].sum() / keep.sum().clamp(min=1)  # scalar: the mean over real tokens


def learning_rate(step: int, d_model: int, warmup_steps: int) -> float:
    """Eq. (3): lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), for step >= 1.
    It rises linearly for warmup_steps, then decays with the inverse square root of the step."""
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def make_optimizer(
    model: nn.Module, config: TransformerConfig, amsgrad: bool = False
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """§5.3: Adam with beta_1 = 0.9, beta_2 = 0.98, eps = 1e-9, driven by the schedule of Eq. (3)
    times config.lr_factor (1 by default). Call scheduler.step() after every optimiser step.

    amsgrad=True (not in the paper) divides by the largest second moment seen so far instead of
    the running one. With beta_2 = 0.98 that running estimate forgets within ~50 steps: once a
    small model has solved a toy task its gradients shrink towards zero, and the next larger
    gradient gets an outsized step that can undo everything it learned. The demo needs it.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9, amsgrad=amsgrad)
    # LambdaLR multiplies lr=1.0 by the lambda; it counts from 0, the paper's steps from 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: config.lr_factor * learning_rate(i + 1, config.d_model, config.warmup_steps)
    )
    return optimizer, scheduler


# The toy tasks: the model sees a sequence of symbols and must write it back, reversed or not.
PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL = 3  # symbols are FIRST_SYMBOL, FIRST_SYMBOL + 1, ...
TASKS = ("reverse", "copy")


def make_examples(
    task: str, n: int, n_symbols: int, min_len: int, max_len: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """n random sequences of min_len..max_len symbols, and what the model must answer.
    src (n, max_len + 1) = symbols, EOS, padding; tgt (n, max_len + 2) = BOS, answer, EOS, padding."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)  # (n,)
    symbols = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + n_symbols, (n, max_len), generator=generator)  # (n, max_len)
    positions = torch.arange(max_len)  # (max_len,)
    real = positions < lengths[:, None]  # (n, max_len): True on real symbols, False on padding
    symbols = symbols.masked_fill(~real, PAD)  # (n, max_len)
    if task == "reverse":
        # position j of the answer takes symbol (length - 1 - j) of the source
        index = (lengths[:, None] - 1 - positions).clamp(min=0)  # (n, max_len)
        answer = symbols.gather(1, index).masked_fill(~real, PAD)  # (n, max_len)
    else:
        answer = symbols  # (n, max_len)
    rows = torch.arange(n)  # (n,)
    src = torch.full((n, max_len + 1), PAD)  # (n, S)
    src[:, :max_len] = symbols
    src[rows, lengths] = EOS  # the source ends with EOS too: a fixed point to count back from
    tgt = torch.full((n, max_len + 2), PAD)  # (n, T)
    tgt[:, 0] = BOS
    tgt[:, 1 : max_len + 1] = answer
    tgt[rows, lengths + 1] = EOS
    return src, tgt


def train_step(model: Transformer, src: Tensor, tgt: Tensor, optimizer, scheduler) -> float:
    """One step of teacher forcing: the decoder reads tgt shifted right and predicts tgt."""
    model.train()
    decoder_input, labels = tgt[:, :-1], tgt[:, 1:]  # (B, T) each: BOS..last, first..EOS
    logits = model(src, decoder_input)  # (B, T, V)
    loss = label_smoothed_loss(logits, labels, model.config.label_smoothing, model.config.pad_id)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


# -----------------------------------------------------------------------------
# Stage 12 · Decoding: greedy and beam search, and the demo · §3, §6.1
# -----------------------------------------------------------------------------


def per_sentence_max_len(model: Transformer, max_len: int | Tensor, src: Tensor) -> Tensor:
    """max_len as one cap per sentence (B,): an int caps every sentence alike, a LongTensor (B,) each on
    its own. A decoding loop writes up to max_len tokens after bos_id: they must fit the positional encoding."""
    if isinstance(max_len, Tensor):
        kind = max_len.dtype
        if max_len.shape != (src.size(0),) or kind.is_floating_point or kind.is_complex or kind == torch.bool:
            raise ValueError(
                f"max_len as a tensor must hold one integer per sentence, shape ({src.size(0)},), "
                f"got {kind} of shape {tuple(max_len.shape)}"
            )
    for value in max_len.tolist() if isinstance(max_len, Tensor) else [max_len]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_len must be a positive integer, got {value!r}")
        if value + 1 > model.config.max_len:
            raise ValueError(
                f"max_len + 1 = {value + 1} output positions exceed the model's max_len={model.config.max_len}"
            )
    return torch.as_tensor(max_len, dtype=torch.long, device=src.device).expand(src.size(0))  # (B,)


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: Tensor,
    max_len: int | Tensor,
    bos_id: int,
    eos_id: int | None = None,
    src_mask: Tensor | None = None,
) -> Tensor:
    """Write the output one token at a time, each time taking the most probable next token.

    The encoder runs once; the decoder re-reads everything written so far at every step.
    Returns token ids (B, <= max_len + 1) that start with bos_id. A sequence that has written
    eos_id, or max_len tokens, is padded with pad_id from then on; decoding stops early once all have.
    max_len is an int, or a LongTensor (B,) that gives each sentence its own (§6.1 caps an output at
    its input length + 50), so that a sentence's answer does not depend on the others in its batch.
    """
    model._check_tokens("src", src, model.config.src_vocab_size)  # once: the encoder below does not check again
    max_len = per_sentence_max_len(model, max_len, src)  # (B,)
    was_training = model.training
    model.eval()
    pad_id = model.config.pad_id
    if src_mask is None:
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    memory = model.encoder(model.embed(model.src_embed, src), src_mask)  # (B, S, D)
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)  # (B,)
    for t in range(1, model.config.max_len):  # each sequence stops by its own max_len, below the model's
        hidden = model.decode(ys, memory, src_mask, subsequent_mask(ys.size(1), src.device))  # (B, t, D)
        next_token = model.generator(hidden[:, -1]).argmax(dim=-1)  # (B, D) -> (B, V) -> (B,)
        next_token = next_token.masked_fill(finished, pad_id)  # (B,)
        if eos_id is not None:
            finished |= next_token == eos_id
        finished |= t >= max_len  # (B,): it has written its max_len tokens
        ys = torch.cat([ys, next_token[:, None]], dim=1)  # (B, t) -> (B, t + 1)
        if finished.all():
            break
    model.train(was_training)
    return ys


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """§6.1, after Wu et al. (2016): lp(Y) = ((5 + |Y|) / 6)^alpha. A hypothesis is ranked by
    log P(Y | X) / lp(Y); alpha = 0 ranks by log-probability alone, which favours short outputs."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: Tensor,
    max_len: int | Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    src_mask: Tensor | None = None,
    return_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """§6.1: keep the beam_size best hypotheses per sentence, ranked by log-probability over the
    length penalty; the paper uses beam 4 and alpha = 0.6.

    Each sentence keeps K = beam_size live hypotheses, as fairseq does. At each step every live one is
    extended by every token; of these candidates, those among the best K that end in eos_id finish, and
    the best K that do not end live on, so the beam does not narrow as hypotheses finish. |Y| counts the
    tokens written after bos_id, eos_id included; a step's candidates all have the same |Y|, so log P
    ranks them as log P / lp does. A sentence's answer is the best, by log P / lp, of those that finished
    and, at its max_len, of the live ones cut off there, as greedy_decode's are. It is decided at its
    max_len, or earlier once that answer beats every live one's best possible final score (log P only
    falls, so s / lp(max_len) bounds a live score s): this never changes an answer, so a sentence's answer
    does not depend on the others in its batch. Unlike fairseq, it is not decided once K have finished:
    side hypotheses that end early with a low score would fill the K before a better one ends (beam 4 on
    the numbers task: 918/1000 exact that way, 962 this way, greedy 956). So beam 1 is greedy_decode at
    alpha = 0; with alpha > 0 its hypothesis may go on past greedy's eos_id to a longer answer with a
    better log P / lp. max_len is an int or a LongTensor (B,), as in greedy_decode. Every sentence and
    beam goes through one decoder call per step. Returns token ids (B, <= max_len + 1) like greedy_decode,
    and with return_scores=True also each answer's log P / lp (B,).
    """
    model._check_tokens("src", src, model.config.src_vocab_size)  # once: the encoder below does not check again
    max_len = per_sentence_max_len(model, max_len, src)  # (B,)
    V = model.config.tgt_vocab_size
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= V:
        raise ValueError(f"beam_size must be an integer in [1, {V}] (the target vocabulary), got {beam_size!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (0 turns the length penalty off), got {alpha!r}")
    was_training = model.training
    model.eval()
    pad_id, K, B, device = model.config.pad_id, beam_size, src.size(0), src.device
    if src_mask is None:
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    memory = model.encoder(model.embed(model.src_embed, src), src_mask)  # (B, S, D)
    memory = memory.repeat_interleave(K, dim=0)  # (B, S, D) -> (B*K, S, D): a copy per beam
    if src_mask.size(0) == B:
        src_mask = src_mask.repeat_interleave(K, dim=0)  # (B, ...) -> (B*K, ...)
    ys = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (B*K, 1): the live hypotheses
    # log P of each live hypothesis; all but the first start at -inf so step 1 extends one copy only
    score = torch.full((B, K), -math.inf, dtype=memory.dtype, device=device)  # (B, K)
    score[:, 0] = 0.0
    lp_max = length_penalty(max_len.to(memory.dtype), alpha)  # (B,): the largest lp an answer can get
    answer = torch.full((B, model.config.max_len), pad_id, dtype=torch.long, device=device)  # (B, T + 1): best so far
    answer_score = torch.full((B,), -math.inf, dtype=memory.dtype, device=device)  # (B,): its log P / lp
    answer_length = torch.zeros(B, dtype=torch.long, device=device)  # (B,): its |Y|
    decided = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    for t in range(1, model.config.max_len):  # each sentence is decided by its own max_len, below the model's
        hidden = model.decode(ys, memory, src_mask, subsequent_mask(t, device))  # (B*K, t, D)
        log_p = model.generator(hidden[:, -1]).log_softmax(dim=-1).view(B, K, V)  # (B*K, D) -> (B, K, V)
        candidate = score[:, :, None] + log_p  # (B, K, 1) + (B, K, V) -> (B, K, V): log P of each extension
        best, index = candidate.view(B, K * V).topk(K, dim=-1)  # (B, K) each: the best K, best first
        ends = index % V == eos_id  # (B, K): those that end in eos_id finish
        # the answers step t offers, |Y| = t: those that finish, and at a sentence's max_len all, cut off
        offered = ends | (t >= max_len)[:, None]  # (B, K)
        ranked = (best / length_penalty(t, alpha)).masked_fill(~offered, -math.inf)  # (B, K): log P / lp
        offer_score, which = ranked.max(dim=-1)  # (B,) each: the best offered, -inf if none is
        pick = index.gather(1, which[:, None])[:, 0]  # (B,): its place among the K * V candidates
        extended = ys.view(B, K, t)[torch.arange(B, device=device), pick // V]  # (B*K, t) -> (B, t): what it extends
        offer = torch.cat([extended, (pick % V)[:, None]], dim=1)  # (B, t + 1): and with which token
        better = (offer_score > answer_score) & ~decided  # (B,): a decided sentence keeps its answer
        answer[better, : t + 1] = offer[better]  # (n, t + 1): the n sentences whose answer improves
        answer_score[better] = offer_score[better]  # (n,)
        answer_length[better] = t  # (n,)
        candidate[:, :, eos_id] = -math.inf  # the best K that do not end live on
        score, index = candidate.view(B, K * V).topk(K, dim=-1)  # (B, K) each, best first
        rows = (torch.arange(B, device=device)[:, None] * K + index // V).flatten()  # (B*K,): the ones to extend
        ys = torch.cat([ys[rows], (index % V).view(B * K, 1)], dim=1)  # (B*K, t) -> (B*K, t + 1)
        bound = score[:, 0] / lp_max  # (B,): the best final score a live hypothesis can still reach
        # decided: max_len reached, or no live hypothesis can overtake the answer any more
        decided |= (t >= max_len) | (answer_score >= bound)  # (B,)
        if decided.all():
            break
    out = answer[:, : 1 + int(answer_length.max())]  # (B, T + 1): no column beyond the longest answer
    model.train(was_training)
    return (out, answer_score) if return_scores else out


def exact_match(model: Transformer, src: Tensor, tgt: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Greedy-decode every source; return the predictions (n, T) and which equal the target (n,)."""
    predictions, correct = [], []
    for i in range(0, src.size(0), batch_size):
        s, t = src[i : i + batch_size], tgt[i : i + batch_size]  # (b, S), (b, T)
        ys = greedy_decode(model, s, t.size(1) - 1, BOS, EOS)  # (b, <= T)
        ys = F.pad(ys, (0, t.size(1) - ys.size(1)), value=PAD)  # (b, T)
        predictions.append(ys)
        correct.append((ys == t).all(dim=1))  # (b,)
    return torch.cat(predictions), torch.cat(correct)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise ValueError(f"device {name!r} is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def int_at_least(text: str, minimum: int, what: str) -> int:
    """An integer flag's value, or an argparse error naming what was expected and what arrived."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return int_at_least(text, 0, "an integer >= 0")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag costs one line on stderr (not the usage block) and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description="Train a small Transformer on a toy task and show it learn.")
    parser.add_argument("--task", choices=TASKS, default="reverse", help="what the model learns (default: reverse)")
    parser.add_argument("--steps", type=positive_int, default=400, help="training steps (default: 400)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sequences per step (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto")
    parser.add_argument("--examples", type=non_negative_int, default=8, help="held-out examples to show (default: 8)")
    return parser.parse_args(argv)


# The demo's task: 10 symbols, sequences of 8 to 12 of them, 1000 held-out examples.
N_SYMBOLS, MIN_LEN, MAX_LEN, N_TEST = 10, 8, 12, 1000


def demo_config() -> TransformerConfig:
    """A model small enough to learn the toy tasks in seconds on a CPU."""
    vocab = FIRST_SYMBOL + N_SYMBOLS
    return TransformerConfig(
        vocab, vocab, d_model=64, n_heads=4, n_layers=2, d_ff=256, dropout=0.0, max_len=MAX_LEN + 2, warmup_steps=200
    )


def train_toy_model(
    task: str = "reverse",
    steps: int = 400,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float, float], None] | None = None,
) -> tuple[Transformer, Tensor, Tensor, float]:
    """Train demo_config() on a toy task. Returns the model, the held-out sources and targets
    (never seen in training) and the seconds spent training. on_step(step, loss, lr) follows along."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    test_src, test_tgt = make_examples(task, N_TEST, N_SYMBOLS, MIN_LEN, MAX_LEN, generator)
    held_out = {tuple(row.tolist()) for row in test_src}
    config = demo_config()
    model = Transformer(config).to(device)
    optimizer, scheduler = make_optimizer(model, config, amsgrad=True)  # see make_optimizer: stable to the end
    start = time.perf_counter()
    for step in range(1, steps + 1):
        src, tgt = make_examples(task, batch_size, N_SYMBOLS, MIN_LEN, MAX_LEN, generator)
        fresh = torch.tensor([tuple(row.tolist()) not in held_out for row in src])  # (B,): never train on test
        loss = train_step(model, src[fresh].to(device), tgt[fresh].to(device), optimizer, scheduler)
        if on_step is not None:
            on_step(step, loss, scheduler.get_last_lr()[0])
    return model, test_src, test_tgt, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        device = pick_device(args.device)
    except ValueError as error:
        print(f"transformer.py: error: {error}", file=sys.stderr)
        return 2
    config = demo_config()
    console.print(
        f"[bold]{args.task}[/] task: sequences of {MIN_LEN}-{MAX_LEN} symbols from {N_SYMBOLS}; "
        f"model d_model={config.d_model}, h={config.n_heads}, N={config.n_layers}, on {device}"
    )
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        bar = progress.add_task("train", total=args.steps, loss=float("nan"), lr=0.0)
        model, test_src, test_tgt, seconds = train_toy_model(
            args.task,
            args.steps,
            args.batch_size,
            args.seed,
            device,
            on_step=lambda step, loss, lr: progress.update(bar, completed=step, loss=loss, lr=lr),
        )

    predictions, correct = exact_match(model, test_src.to(device), test_tgt.to(device))
    predictions, correct = predictions.cpu(), correct.cpu()

    def show(tokens: Tensor) -> str:
        return "".join(str(t - FIRST_SYMBOL) for t in tokens.tolist() if t >= FIRST_SYMBOL)

    table = Table(title=f"held-out examples ({args.task})")
    for column in ("source", "target", "prediction", ""):
        table.add_column(column)
    for i in range(min(args.examples, N_TEST)):
        ok = bool(correct[i])
        table.add_row(show(test_src[i]), show(test_tgt[i]), show(predictions[i]), "[green]✓[/]" if ok else "[red]✗[/]")
    console.print(table)
    hits = int(correct.sum())
    console.print(f"exact match {100 * hits / N_TEST:.1f}% ({hits}/{N_TEST}) after {seconds:.1f} s of training")
    return 0


# -----------------------------------------------------------------------------
# Stage 14 · Key/value cache for greedy decoding and beam search · beyond the paper (§3.2.3)
# -----------------------------------------------------------------------------


class KeyValueCache:
    """What the decoder keeps between decoding steps:
    - per layer, the self-attention keys and values of every position written so far, one row per
      sequence being written (K rows per sentence in beam search, one per hypothesis); each step
      appends one position;
    - per layer, the cross-attention keys and values of the encoder output, computed once, and the
      source mask that goes with them: one row per sentence, which all its hypotheses read.
    reorder() keeps the rows the decoder still needs, in the order it needs them.
    """

    def __init__(self, model: Transformer, memory: Tensor, src_mask: Tensor | None, beam_size: int = 1):
        B, S, _ = memory.shape
        H, d_k, K = model.config.n_heads, model.config.d_k, beam_size
        layers = model.decoder.layers
        self.length = 0  # positions written so far
        self.keys = [memory.new_zeros(B * K, H, 0, d_k) for _ in layers]  # (B*K, H, t, d_k) per layer, t = 0
        self.values = [memory.new_zeros(B * K, H, 0, d_k) for _ in layers]  # (B*K, H, t, d_k) per layer, t = 0
        self.memory_keys = [
            layer.cross_attn.split_heads(layer.cross_attn.w_k(memory)) for layer in layers
        ]  # (B, H, S, d_k)
        self.memory_values = [
            layer.cross_attn.split_heads(layer.cross_attn.w_v(memory)) for layer in layers
        ]  # (B, H, S, d_k)
        self.src_mask = src_mask  # (B, 1, 1, S), or any mask that broadcasts

    def reorder(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """New row i of the decoder's keys and values is old row rows[i] (rows (R,), R rows from now on):
        beam search repeats a row when two hypotheses extend the same one. When sentences are done, their
        rows are left out of rows, and sentences (B',) names the ones that stay, whose encoder side is
        kept: later steps do not compute the others."""
        self.keys = [k.index_select(0, rows) for k in self.keys]  # (R_before, H, t, d_k) -> (R, H, t, d_k)
        self.values = [v.index_select(0, rows) for v in self.values]  # (R_before, H, t, d_k) -> (R, H, t, d_k)
        if sentences is not None:
            self.memory_keys = [k.index_select(0, sentences) for k in self.memory_keys]  # (B', H, S, d_k)
            self.memory_values = [v.index_select(0, sentences) for v in self.memory_values]  # (B', H, S, d_k)
            if self.src_mask is not None and self.src_mask.dim() == 4 and self.src_mask.size(0) > 1:
                self.src_mask = self.src_mask[sentences]  # (B', 1, 1, S); a mask of batch 1 serves all


def decode_step(model: Transformer, token: Tensor, cache: KeyValueCache) -> Tensor:
    """The decoder on one new token per row (B*K,) at position cache.length; returns its output (B*K, D).

    The same computation as DecoderLayer.forward, for the last position only: its query meets the
    cached keys and values of every position so far, so it needs no subsequent mask. A sentence's K
    rows (its hypotheses; K = 1 in greedy decoding) come one after another and read the same encoder
    output, so cross-attention asks it their K queries at once.
    """
    t, B = cache.length, cache.memory_keys[0].size(0)
    # Transformer.decode for one token: the positional encoding of position t, not of position 0
    y = model.embed_dropout(model.tgt_embed(token[:, None]) + model.pos_encoding.pe[t])  # (B*K, 1, D)
    for i, layer in enumerate(model.decoder.layers):
        attn = layer.self_attn
        k, v = attn.split_heads(attn.w_k(y)), attn.split_heads(attn.w_v(y))  # (B*K, 1, D) -> (B*K, H, 1, d_k)
        cache.keys[i] = torch.cat([cache.keys[i], k], dim=2)  # (B*K, H, t, d_k) -> (B*K, H, t + 1, d_k)
        cache.values[i] = torch.cat([cache.values[i], v], dim=2)  # (B*K, H, t, d_k) -> (B*K, H, t + 1, d_k)
        q = attn.split_heads(attn.w_q(y))  # (B*K, 1, D) -> (B*K, H, 1, d_k)
        out, _ = scaled_dot_product_attention(q, cache.keys[i], cache.values[i])  # (B*K, H, 1, d_k)
        y = layer.add_norm_1(y, attn.w_o(attn.merge_heads(out)))  # (B*K, 1, D)
        cross = layer.cross_attn
        q = cross.split_heads(cross.w_q(y).view(B, -1, y.size(-1)))  # (B*K, 1, D) -> (B, K, D) -> (B, H, K, d_k)
        out, _ = scaled_dot_product_attention(
            q, cache.memory_keys[i], cache.memory_values[i], cache.src_mask
        )  # (B, H, K, d_k)
        y = layer.add_norm_2(y, cross.w_o(cross.merge_heads(out)).view_as(y))  # (B, K, D) -> (B*K, 1, D)
        y = layer.add_norm_3(y, layer.feed_forward(y))  # (B*K, 1, D)
    cache.length += 1
    return y[:, 0]  # (B*K, D)


@torch.no_grad()
def cached_greedy_decode(
    model: Transformer,
    src: Tensor,
    max_len: int | Tensor,
    bos_id: int,
    eos_id: int | None = None,
    src_mask: Tensor | None = None,
) -> Tensor:
    """greedy_decode with a key/value cache: the same arguments and the same tokens.

    The encoder runs once; each step runs the decoder on the newest token only, and only for the
    sequences that have not yet written eos_id or their max_len tokens: a finished one leaves the cache.
    Returns token ids (B, <= max_len + 1) that start with bos_id, padded with pad_id after eos_id.
    """
    model._check_tokens("src", src, model.config.src_vocab_size)  # once: the encoder below does not check again
    max_len = per_sentence_max_len(model, max_len, src)  # (B,)
    was_training = model.training
    model.eval()
    pad_id, B, device = model.config.pad_id, src.size(0), src.device
    if src_mask is None:
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    memory = model.encoder(model.embed(model.src_embed, src), src_mask)  # (B, S, D)
    cache = KeyValueCache(model, memory, src_mask)
    ys = torch.full((B, model.config.max_len), pad_id, dtype=torch.long, device=device)  # (B, T + 1)
    ys[:, 0] = bos_id
    alive = torch.arange(B, device=device)  # (b,): the sequences still writing, one cache row each
    token = ys[:, 0]  # (b,)
    for t in range(1, model.config.max_len):  # each sequence stops by its own max_len, below the model's
        hidden = decode_step(model, token, cache)  # (b, D): only the newest token goes in
        token = model.generator(hidden).argmax(dim=-1)  # (b, D) -> (b, V) -> (b,)
        ys[alive, t] = token
        going = t < max_len[alive]  # (b,): it has not yet written its max_len tokens
        if eos_id is not None:
            going &= token != eos_id
        if not going.all():
            if not going.any():
                break
            alive, token = alive[going], token[going]  # (b',)
            kept = going.nonzero()[:, 0]  # (b',)
            cache.reorder(kept, sentences=kept)  # the finished sequences leave the cache
    model.train(was_training)
    return ys[:, : t + 1]  # (B, t + 1): no column after the last step taken


@torch.no_grad()
def cached_beam_search(
    model: Transformer,
    src: Tensor,
    max_len: int | Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    src_mask: Tensor | None = None,
    return_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """beam_search with a key/value cache: the same arguments, the same tokens and scores.

    The ranking is beam_search's, line for line; what changes is the work. Each step runs the decoder
    on the newest token of each live hypothesis only, and once topk has picked the hypotheses that live
    on, cache.reorder(rows) moves their keys and values with them. A sentence that is decided (its
    max_len reached, or beam_search's exact bound) leaves the batch and the cache, so later steps
    compute only the sentences still undecided.
    """
    model._check_tokens("src", src, model.config.src_vocab_size)  # once: the encoder below does not check again
    max_len = per_sentence_max_len(model, max_len, src)  # (B,)
    V = model.config.tgt_vocab_size
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= V:
        raise ValueError(f"beam_size must be an integer in [1, {V}] (the target vocabulary), got {beam_size!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (0 turns the length penalty off), got {alpha!r}")
    was_training = model.training
    model.eval()
    pad_id, K, B, device = model.config.pad_id, beam_size, src.size(0), src.device
    if src_mask is None:
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    memory = model.encoder(model.embed(model.src_embed, src), src_mask)  # (B, S, D)
    cache = KeyValueCache(model, memory, src_mask, K)  # a row per hypothesis, and the memory once per sentence
    alive = torch.arange(B, device=device)  # (b,): the sentences still undecided, K cache rows each
    ys = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (b*K, 1): the live hypotheses
    # log P of each live hypothesis; all but the first start at -inf so step 1 extends one copy only
    score = torch.full((B, K), -math.inf, dtype=memory.dtype, device=device)  # (b, K)
    score[:, 0] = 0.0
    lp_max = length_penalty(max_len.to(memory.dtype), alpha)  # (B,): the largest lp an answer can get
    answer = torch.full((B, model.config.max_len), pad_id, dtype=torch.long, device=device)  # (B, T + 1): best so far
    answer_score = torch.full((B,), -math.inf, dtype=memory.dtype, device=device)  # (B,): its log P / lp
    answer_length = torch.zeros(B, dtype=torch.long, device=device)  # (B,): its |Y|
    for t in range(1, model.config.max_len):  # each sentence is decided by its own max_len, below the model's
        b = alive.size(0)
        hidden = decode_step(model, ys[:, -1], cache)  # (b*K, D): the newest token of each hypothesis
        log_p = model.generator(hidden).log_softmax(dim=-1).view(b, K, V)  # (b*K, D) -> (b, K, V)
        # from here to `done`, beam_search's ranking: B becomes b, and a sentence's own state is [alive]
        candidate = score[:, :, None] + log_p  # (b, K, 1) + (b, K, V) -> (b, K, V): log P of each extension
        best, index = candidate.view(b, K * V).topk(K, dim=-1)  # (b, K) each: the best K, best first
        ends = index % V == eos_id  # (b, K): those that end in eos_id finish
        # the answers step t offers, |Y| = t: those that finish, and at a sentence's max_len all, cut off
        offered = ends | (t >= max_len[alive])[:, None]  # (b, K)
        ranked = (best / length_penalty(t, alpha)).masked_fill(~offered, -math.inf)  # (b, K): log P / lp
        offer_score, which = ranked.max(dim=-1)  # (b,) each: the best offered, -inf if none is
        pick = index.gather(1, which[:, None])[:, 0]  # (b,): its place among the K * V candidates
        extended = ys.view(b, K, t)[torch.arange(b, device=device), pick // V]  # (b*K, t) -> (b, t): what it extends
        offer = torch.cat([extended, (pick % V)[:, None]], dim=1)  # (b, t + 1): and with which token
        better = offer_score > answer_score[alive]  # (b,): no sentence here is decided yet
        answer[alive[better], : t + 1] = offer[better]  # (n, t + 1): the n sentences whose answer improves
        answer_score[alive[better]] = offer_score[better]  # (n,)
        answer_length[alive[better]] = t  # (n,)
        candidate[:, :, eos_id] = -math.inf  # the best K that do not end live on
        score, index = candidate.view(b, K * V).topk(K, dim=-1)  # (b, K) each, best first
        rows = (torch.arange(b, device=device)[:, None] * K + index // V).flatten()  # (b*K,): the ones to extend
        ys = torch.cat([ys[rows], (index % V).view(b * K, 1)], dim=1)  # (b*K, t) -> (b*K, t + 1)
        bound = score[:, 0] / lp_max[alive]  # (b,): the best final score a live hypothesis can still reach
        # done: max_len reached, or no live hypothesis can overtake the answer any more
        done = (t >= max_len[alive]) | (answer_score[alive] >= bound)  # (b,)
        kept = None  # the sentences that stay, when some are done
        if done.any():
            keep = ~done  # (b,)
            if not keep.any():
                break
            alive, score = alive[keep], score[keep]  # (b',), (b', K)
            ys = ys.view(b, K, t + 1)[keep].flatten(0, 1)  # (b'*K, t + 1)
            rows = rows.view(b, K)[keep].flatten()  # (b'*K,)
            kept = keep.nonzero()[:, 0]  # (b',)
        cache.reorder(rows, sentences=kept)  # the cache follows the hypotheses, and drops the sentences that are done
    out = answer[:, : 1 + int(answer_length.max())]  # (B, T + 1): no column beyond the longest answer
    model.train(was_training)
    return (out, answer_score) if return_scores else out


# -----------------------------------------------------------------------------
# Demo of this stage (not part of transformer.py)
# -----------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def ends(out: Tensor, eos: int) -> list[int | None]:
    """The step at which each answer (B, T) writes eos; None for one cut off at max_len."""
    return [int((row[1:] == eos).nonzero()[0]) + 1 if (row[1:] == eos).any() else None for row in out]


def demo(argv: list[str] | None = None) -> int:
    OneLineParser(
        description="Greedy decoding and beam search with a key/value cache: the same tokens, and how much faster."
    ).parse_args(argv)
    console = Console()
    torch.manual_seed(0)
    # An untrained model will do: both decoders must write the same tokens, whatever they are.
    # Its output projection is untied from the embedding, so it does not just repeat its last token.
    vocab = 20
    config = TransformerConfig(vocab, vocab, d_model=128, n_heads=4, n_layers=2, d_ff=512, dropout=0.0, max_len=300)
    model = Transformer(config).eval()
    model.generator.weight = nn.Parameter(torch.randn(vocab, config.d_model))
    src = torch.randint(FIRST_SYMBOL, vocab, (4, 12))  # (B, S)
    src[1, 8:] = PAD  # padding in the source
    src[3, 3:] = PAD

    table = Table(title="Stage 14: the cached decoders vs transformer.py's, 4 sources, untrained model")
    for column in ("check", "result", ""):
        table.add_column(column)
    results = []
    plain, cached = greedy_decode(model, src, 40, BOS), cached_greedy_decode(model, src, 40, BOS)
    results.append(("greedy, 40 tokens, no end token", torch.equal(plain, cached), ""))
    # Pretend the token that sequence 0 writes at step 10 is the end token: sequences stop at different steps.
    eos = int(plain[0, 10])
    plain_eos, cached_eos = greedy_decode(model, src, 40, BOS, eos), cached_greedy_decode(model, src, 40, BOS, eos)
    results.append((f"greedy, end token {eos}: ends at {ends(plain_eos, eos)}", torch.equal(plain_eos, cached_eos), ""))
    beam, beam_scores = beam_search(model, src, 40, BOS, eos, beam_size=4, return_scores=True)
    rows = []  # how many rows the cached decoder computes at each step
    hook = model.decoder.layers[0].self_attn.w_q.register_forward_hook(lambda _m, a, _o: rows.append(a[0].size(0)))
    fast, fast_scores = cached_beam_search(model, src, 40, BOS, eos, beam_size=4, return_scores=True)
    hook.remove()
    gap = (beam_scores - fast_scores).abs().max().item()
    results.append(
        (f"beam 4, end token {eos}: ends at {ends(beam, eos)}", torch.equal(beam, fast), f", scores {gap:.0e} apart")
    )
    for check, same, extra in results:
        table.add_row(check, f"identical: {same}{extra}", "[green]✓[/]" if same else "[red]✗[/]")
    console.print(table)
    print("greedy, sequence 0:", " ".join(str(t) for t in cached_eos[0].tolist()))
    print("beam 4, rows the decoder computes at each step (4 per undecided sentence):", " ".join(map(str, rows)))

    timing = Table(title="time to decode 4 sources, median of 3 (CPU; see `make bench` for more)")
    for column in ("decoding", "transformer.py", "stage 14", "speed-up"):
        timing.add_column(column, justify="right")
    runs = [
        (
            f"greedy, {n} tokens",
            lambda n=n: greedy_decode(model, src, n, BOS),
            lambda n=n: cached_greedy_decode(model, src, n, BOS),
        )
        for n in (16, 64, 128)
    ] + [
        (
            f"beam 4, up to 64 tokens, end token {eos}",
            lambda: beam_search(model, src, 64, BOS, eos, beam_size=4),
            lambda: cached_beam_search(model, src, 64, BOS, eos, beam_size=4),
        )
    ]
    with Progress(TextColumn("timing"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as progress:
        bar = progress.add_task("timing", total=len(runs))
        for name, slow_fn, fast_fn in runs:
            slow, fast = median_seconds(slow_fn), median_seconds(fast_fn)
            timing.add_row(name, f"{slow * 1e3:.0f} ms", f"{fast * 1e3:.0f} ms", f"{slow / fast:.1f}x")
            progress.advance(bar)
    console.print(timing)
    all_ok = all(same for _, same, _ in results)
    console.print("[green]the cache changes the work, not the tokens[/]" if all_ok else "[red]the tokens differ[/]")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(demo())
