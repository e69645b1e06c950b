"""Each component against the paper's equation and against PyTorch's own implementation.

A test marked `stage(n)` runs on transformer.py and on every stage from n on (see conftest.py), so a stage
passes the tests of every component it contains so far. The properties that the pitfall harness judges each broken
variant by (the embedding scale, the positional-encoding formula, attention and multi-head attention against
PyTorch's, a fully masked query) are in tests/test_properties.py, marked the same way; this file holds the rest.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.torch_reference import copy_decoder_layer, copy_encoder_layer

TOL64 = 1e-10  # float64 agreement: the same arithmetic, up to summation order


def small_config(tf, **overrides):
    settings = dict(d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.0, max_len=32) | overrides
    return tf.TransformerConfig(11, 11, **settings)


# -- Stage 2: positional encoding ----------------------------------------------------------------------------


@pytest.mark.stage(2)
def test_positional_encoding_is_a_buffer_added_to_the_input(tf):
    module = tf.PositionalEncoding(d_model=8, max_len=16)
    assert not list(module.parameters()), "the sinusoidal encoding is fixed: it must not be a learned parameter"
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module(x), x + module.pe[:5])
    assert module.double().pe.dtype == torch.float64, "the encoding must follow the module's dtype (a buffer)"


# -- Stage 3: scaled dot-product attention -------------------------------------------------------------------


@pytest.mark.stage(3)
def test_attention_weights_follow_equation_1_by_hand(tf):
    q = torch.tensor([[1.0, 0.0]])  # (T_q=1, d_k=2)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (T_k=2, d_k=2)
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    _, weights = tf.scaled_dot_product_attention(q, k, v)
    # scores = [1, 0] / sqrt(2): softmax = [e^a, 1] / (e^a + 1) with a = 1/sqrt(2)
    a = math.exp(1 / math.sqrt(2))
    torch.testing.assert_close(weights, torch.tensor([[a / (a + 1), 1 / (a + 1)]]), msg="not softmax(QK^T/sqrt(d_k))")


# -- Stage 4: multi-head attention ---------------------------------------------------------------------------


@pytest.mark.stage(4)
def test_multi_head_attention_equals_an_explicit_loop_over_heads(tf):
    torch.manual_seed(0)
    D, H = 12, 3
    d_k = D // H
    mha = tf.MultiHeadAttention(D, H).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    heads = []
    for h in range(H):  # head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V), each with its own d_k columns
        rows = slice(h * d_k, (h + 1) * d_k)
        q = x @ mha.w_q.weight[rows].T + mha.w_q.bias[rows]
        k = x @ mha.w_k.weight[rows].T + mha.w_k.bias[rows]
        v = x @ mha.w_v.weight[rows].T + mha.w_v.bias[rows]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_k), dim=-1)
        heads.append(weights @ v)
    expected = torch.cat(heads, dim=-1) @ mha.w_o.weight.T + mha.w_o.bias  # Concat(head_1..head_h) W^O
    assert (mha(x, x, x) - expected).abs().max() <= TOL64, "multi-head attention is not Concat(head_1, ..., head_h) W^O"


@pytest.mark.stage(4)
def test_split_and_merge_heads_are_inverse_and_put_heads_on_dim_1(tf):
    mha = tf.MultiHeadAttention(8, 2)
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    split = mha.split_heads(x)
    assert split.shape == (2, 2, 3, 4), "split_heads must give (B, H, L, d_k)"
    torch.testing.assert_close(split[:, 1, :, :], x[:, :, 4:], msg="head 1 must hold features 4..7 of every position")
    torch.testing.assert_close(mha.merge_heads(split), x, msg="merge_heads(split_heads(x)) must give x back")


# -- Stage 5: feed-forward -----------------------------------------------------------------------------------


@pytest.mark.stage(5)
def test_feed_forward_is_equation_2_applied_per_position(tf):
    torch.manual_seed(0)
    ffn = tf.PositionwiseFeedForward(d_model=8, d_ff=32).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    expected = torch.clamp(x @ ffn.w_1.weight.T + ffn.w_1.bias, min=0) @ ffn.w_2.weight.T + ffn.w_2.bias
    assert (ffn(x) - expected).abs().max() <= TOL64, "FFN(x) != max(0, x W1 + b1) W2 + b2"
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm], msg="the FFN must treat each position on its own")


# -- Stage 6: residual, dropout, LayerNorm -------------------------------------------------------------------


@pytest.mark.stage(6)
@pytest.mark.post_ln
def test_add_and_norm_is_post_ln(tf):
    torch.manual_seed(0)
    block = tf.AddAndNorm(d_model=8, dropout=0.5).eval()
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    expected = F.layer_norm(x + y, (8,))
    torch.testing.assert_close(block(x, y), expected, msg="Add & Norm must be LayerNorm(x + Sublayer(x)) (post-LN)")
    out = block(x, y)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 3), atol=1e-6, rtol=0)


@pytest.mark.stage(6)
@pytest.mark.post_ln
def test_add_and_norm_applies_dropout_to_the_sublayer_only_in_training(tf):
    torch.manual_seed(0)
    block = tf.AddAndNorm(d_model=64, dropout=0.5)
    x, y = torch.randn(4, 8, 64), torch.randn(4, 8, 64)
    assert not torch.allclose(block.train()(x, y), F.layer_norm(x + y, (64,))), "training mode must drop out"
    torch.testing.assert_close(block.eval()(x, y), F.layer_norm(x + y, (64,)), msg="eval mode must not drop out")
    # dropout hits the sub-layer output, not the residual: with y = 0 nothing can be dropped
    torch.testing.assert_close(block.train()(x, torch.zeros_like(y)), F.layer_norm(x, (64,)))


# -- Stage 7 and 9: encoder and decoder layers against PyTorch's -------------------------------------------


@pytest.mark.stage(7)
@pytest.mark.post_ln
def test_encoder_layer_equals_nn_transformer_encoder_layer(tf):
    torch.manual_seed(0)
    config = small_config(tf)
    ours = tf.EncoderLayer(config).double().eval()
    theirs = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        copy_encoder_layer(ours, theirs)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    diff = ours(x, keep[:, None, None, :]) - theirs(x, src_key_padding_mask=~keep)
    assert diff[keep].abs().max() <= TOL64, "encoder layer differs from nn.TransformerEncoderLayer (post-LN, ReLU)"
    assert len(tf.Encoder(config).layers) == config.n_layers


@pytest.mark.stage(9)
@pytest.mark.post_ln
def test_decoder_layer_equals_nn_transformer_decoder_layer(tf):
    torch.manual_seed(0)
    config = small_config(tf)
    ours = tf.DecoderLayer(config).double().eval()
    theirs = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        copy_decoder_layer(ours, theirs)
    y, memory = torch.randn(2, 4, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    causal = tf.subsequent_mask(4)
    diff = ours(y, memory, keep[:, None, None, :], causal) - theirs(
        y, memory, tgt_mask=~causal[0, 0], memory_key_padding_mask=~keep
    )
    assert diff.abs().max() <= TOL64, "decoder layer differs from nn.TransformerDecoderLayer (post-LN, ReLU)"
    assert len(tf.Decoder(config).layers) == config.n_layers


# -- Stage 8: masks ------------------------------------------------------------------------------------------


@pytest.mark.stage(8)
def test_masks_by_hand(tf):
    tokens = torch.tensor([[5, 6, 0], [7, 0, 0]])
    assert tf.padding_mask(tokens, pad_id=0).tolist() == [[[[True, True, False]]], [[[True, False, False]]]]
    assert tf.subsequent_mask(3).tolist() == [[[[True, False, False], [True, True, False], [True, True, True]]]]
    assert tf.target_mask(tokens, pad_id=0)[1, 0].tolist() == [
        [True, False, False],
        [True, False, False],
        [True, False, False],
    ], "the target mask must hide both padding keys and future positions"
