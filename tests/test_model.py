"""The whole model's interface: the logits and the default masks, and clear errors for bad input and bad settings.

Its properties (causality, padding, batch independence, dropout at eval, weight sharing, empty sources) are in
tests/test_properties.py, which `make test-bugs` also runs against every deliberately broken variant.
SRC, TGT and make_model are shared with the other test files."""

from __future__ import annotations

import pytest
import torch

from tests.test_components import small_config


def make_model(tf, seed=0, **overrides):
    torch.manual_seed(seed)
    return tf.Transformer(small_config(tf, **overrides)).double().eval()


def tokens(*rows):
    return torch.tensor(rows)


SRC = tokens([3, 4, 5, 6, 7], [8, 9, 10, 0, 0])  # second source is padded
TGT = tokens([1, 5, 6, 7, 8, 9], [1, 4, 3, 2, 0, 0])


@pytest.mark.stage(10)
def test_logits_shape_and_default_masks(tf):
    model = make_model(tf)
    logits = model(SRC, TGT)
    assert logits.shape == (2, 6, 11), "model(src, tgt) must return (B, T, tgt_vocab_size)"
    explicit = model(SRC, TGT, tf.padding_mask(SRC, 0), tf.target_mask(TGT, 0))
    torch.testing.assert_close(logits, explicit, msg="default masks must be padding + subsequent positions")


# -- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.stage(10)
@pytest.mark.parametrize(
    "src,tgt,error,words",
    [
        (SRC.float(), TGT, TypeError, "integer token ids"),
        (SRC, TGT.to(torch.bool), TypeError, "integer token ids"),
        ([[3, 4]], TGT, TypeError, "torch.Tensor"),
        (SRC[0], TGT, ValueError, "2-D"),
        (SRC, TGT[None], ValueError, "2-D"),
        (tokens([3, -1]), TGT[:1], ValueError, "token id -1, outside the vocabulary [0, 11)"),
        (SRC, tokens([1, 11]), ValueError, "token id 11, outside the vocabulary [0, 11)"),
        (torch.full((1, 33), 3), TGT[:1], ValueError, "length 33, longer than max_len=32"),
        (SRC, TGT[:1], ValueError, "same batch size, got 2 source and 1 target"),
        (SRC[:, :0], TGT, ValueError, "at least one token"),
    ],
    ids=[
        "float-src",
        "bool-tgt",
        "list-src",
        "1d-src",
        "3d-tgt",
        "negative-id",
        "id-too-large",
        "too-long",
        "batch-mismatch",
        "empty",
    ],
)
def test_bad_tokens_get_a_clear_error(tf, src, tgt, error, words):
    model = make_model(tf)
    with pytest.raises(error, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        model(src, tgt)


@pytest.mark.stage(10)
def test_mask_that_cannot_broadcast_gets_a_clear_error(tf):
    model = make_model(tf)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 1, 4\) cannot broadcast"):
        model(SRC, TGT, src_mask=torch.ones(2, 1, 1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        model(SRC, TGT, src_mask=torch.ones(2, 1, 1, 5))


@pytest.mark.stage(1)
@pytest.mark.parametrize(
    "overrides,words",
    [
        (dict(d_model=10, n_heads=4), "divisible by n_heads"),
        (dict(d_model=6, n_heads=2), None),  # fine: 6 = 2 x 3
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(pad_id=11), "pad_id must be a token of both vocabularies"),
        (dict(d_model=9, n_heads=3), "d_model must be even"),
    ],
    ids=["not-divisible", "divisible", "no-layers", "dropout-1", "pad-outside", "odd-d_model"],
)
def test_config_rejects_bad_values(tf, overrides, words):
    if words is None:
        assert tf.TransformerConfig(11, 11, **overrides).d_k == 3
        return
    with pytest.raises(ValueError, match=words):
        tf.TransformerConfig(11, 11, **overrides)
