"""Our Transformer's weights inside PyTorch's own `nn.Transformer`, to prove and measure parity.

`to_torch_transformer(model)` is the one implementation of the weight copy; the tests and the
benchmark both use it. `TorchReference(model)` puts that body between our embeddings and our
output projection, so the same `train_step` and the same loss run on either model.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def to_torch_transformer(model: nn.Module, *, enable_nested_tensor: bool = True) -> nn.Transformer:
    """An `nn.Transformer` that computes what `model.encoder` and `model.decoder` compute.

    `model` is a `transformer.Transformer`. The returned body is built with the same d_model,
    heads, layers, d_ff and dropout, post-LN (norm_first=False), ReLU and batch_first=True, on the
    model's device and dtype, and every weight is copied (not shared): training one model leaves
    the other alone.

    Three settings make it compute our function, not just a similar one:
    - the final LayerNorms that `nn.Transformer` adds after its encoder and decoder stacks are
      replaced by `nn.Identity` (the paper, and our model, have none: each layer already ends in
      Add & Norm);
    - dropout sits only where the paper (§5.4) and our model put it, on each sub-layer's output:
      the attention-weight dropout of `nn.MultiheadAttention` is set to 0 and the dropout between
      the two feed-forward linears is replaced by `nn.Identity`;
    - each attention's W^Q, W^K, W^V go into the packed `in_proj_weight`/`in_proj_bias`, in that
      order; head i uses the same slice of the d_model features in both models.

    Embeddings, the positional encoding and the output projection are not part of `nn.Transformer`;
    `TorchReference` adds ours around it. `nn.Transformer` reads boolean masks the other way round
    from ours: True = may NOT attend.

    In eval mode under `torch.no_grad()` with a source padding mask, PyTorch's encoder packs the
    source into a nested tensor and returns zeros at the padded positions (ours returns vectors
    that the decoder never attends to), so compare memories at real positions only, or pass
    enable_nested_tensor=False.
    """
    config = model.config
    reference = next(model.parameters())
    body = nn.Transformer(
        d_model=config.d_model,
        nhead=config.n_heads,
        num_encoder_layers=config.n_layers,
        num_decoder_layers=config.n_layers,
        dim_feedforward=config.d_ff,
        dropout=config.dropout,
        activation="relu",
        layer_norm_eps=model.encoder.layers[0].add_norm_1.norm.eps,
        batch_first=True,
        norm_first=False,
        device=reference.device,
        dtype=reference.dtype,
    )
    body.encoder.norm = nn.Identity()
    body.decoder.norm = nn.Identity()
    if not enable_nested_tensor:
        body.encoder.enable_nested_tensor = body.encoder.use_nested_tensor = False

    with torch.no_grad():
        for ours, theirs in zip(model.encoder.layers, body.encoder.layers, strict=True):
            copy_encoder_layer(ours, theirs)
        for ours, theirs in zip(model.decoder.layers, body.decoder.layers, strict=True):
            copy_decoder_layer(ours, theirs)
    body.train(model.training)
    return body


def copy_encoder_layer(ours: nn.Module, theirs: nn.TransformerEncoderLayer) -> None:
    """Our EncoderLayer's weights into PyTorch's (call under torch.no_grad())."""
    copy_attention(ours.self_attn, theirs.self_attn)
    _copy_feed_forward(ours.feed_forward, theirs)
    _copy_norm(ours.add_norm_1.norm, theirs.norm1)
    _copy_norm(ours.add_norm_2.norm, theirs.norm2)


def copy_decoder_layer(ours: nn.Module, theirs: nn.TransformerDecoderLayer) -> None:
    """Our DecoderLayer's weights into PyTorch's (call under torch.no_grad())."""
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    _copy_feed_forward(ours.feed_forward, theirs)
    _copy_norm(ours.add_norm_1.norm, theirs.norm1)
    _copy_norm(ours.add_norm_2.norm, theirs.norm2)
    _copy_norm(ours.add_norm_3.norm, theirs.norm3)


def copy_attention(ours: nn.Module, theirs: nn.MultiheadAttention) -> None:
    """Our MultiHeadAttention's W^Q, W^K, W^V (packed, in that order) and W^O into nn.MultiheadAttention."""
    theirs.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))  # (3D, D)
    theirs.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))  # (3D,)
    theirs.out_proj.weight.copy_(ours.w_o.weight)
    theirs.out_proj.bias.copy_(ours.w_o.bias)
    theirs.dropout = 0.0  # the paper drops no attention weights


def _copy_feed_forward(ours: nn.Module, layer: nn.Module) -> None:
    layer.linear1.weight.copy_(ours.w_1.weight)
    layer.linear1.bias.copy_(ours.w_1.bias)
    layer.linear2.weight.copy_(ours.w_2.weight)
    layer.linear2.bias.copy_(ours.w_2.bias)
    layer.dropout = nn.Identity()  # no dropout between the two linears, as in Eq. (2)


def _copy_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm) -> None:
    theirs.weight.copy_(ours.weight)
    theirs.bias.copy_(ours.bias)


class TorchReference(nn.Module):
    """Our embeddings, positional encoding and output projection around `to_torch_transformer(model)`.

    A copy: it shares no parameter with `model`. `forward(src, tgt)` returns logits (B, T, V) from
    token ids with the default masks (padding, and subsequent positions for the target), like
    `model(src, tgt)`, and `.config` is the model's, so `transformer.train_step` runs on it unchanged.
    """

    def __init__(self, model: nn.Module, *, enable_nested_tensor: bool = True):
        super().__init__()
        twin = copy.deepcopy(model)  # ours around the body, but not the same Parameters
        self.config = model.config
        self.src_embed, self.tgt_embed = twin.src_embed, twin.tgt_embed
        self.pos_encoding, self.embed_dropout, self.generator = twin.pos_encoding, twin.embed_dropout, twin.generator
        self.body = to_torch_transformer(model, enable_nested_tensor=enable_nested_tensor)
        self.train(model.training)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        pad_id = self.config.pad_id
        T = tgt.size(1)
        src_x = self.embed_dropout(self.pos_encoding(self.src_embed(src)))  # (B, S) -> (B, S, D)
        tgt_x = self.embed_dropout(self.pos_encoding(self.tgt_embed(tgt)))  # (B, T) -> (B, T, D)
        future = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(1)  # (T, T): True = may NOT attend
        hidden = self.body(
            src_x,
            tgt_x,
            tgt_mask=future,
            src_key_padding_mask=src == pad_id,  # (B, S)
            tgt_key_padding_mask=tgt == pad_id,  # (B, T)
            memory_key_padding_mask=src == pad_id,  # (B, S)
            tgt_is_causal=True,
        )  # (B, T, D)
        return self.generator(hidden)  # (B, T, V)
