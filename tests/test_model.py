"""The whole model: properties every correct encoder-decoder Transformer has, weight sharing, and bad input."""

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


@pytest.mark.stage(10)
@pytest.mark.parametrize("t", [1, 2, 4])
def test_decoder_cannot_see_the_future(tf, t):
    model = make_model(tf)
    changed = TGT.clone()
    changed[:, t:] = torch.randint(3, 11, changed[:, t:].shape, generator=torch.Generator().manual_seed(t))
    before, after = model(SRC, TGT), model(SRC, changed)
    diff = (before[:, :t] - after[:, :t]).abs().max().item()
    assert diff <= 1e-12, (
        f"logits before position {t} changed by {diff:.2e} when only tokens from {t} on changed: the decoder can see the future"
    )
    assert not torch.allclose(before[:, t:], after[:, t:]), "changing tokens must change the later logits"


@pytest.mark.stage(10)
def test_appending_source_padding_changes_nothing(tf):
    model = make_model(tf)
    padded = torch.cat([SRC, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # three more pads on every source
    diff = (model(SRC, TGT) - model(padded, TGT)).abs().max().item()
    assert diff <= 1e-12, (
        f"appending padding to the source changed the logits by {diff:.2e}: padding is being attended to"
    )


@pytest.mark.stage(10)
def test_batch_elements_are_independent(tf):
    model = make_model(tf)
    batched = model(SRC, TGT)
    for i in range(2):
        alone = model(SRC[i : i + 1], TGT[i : i + 1])
        diff = (batched[i : i + 1] - alone).abs().max().item()
        assert diff <= 1e-12, (
            f"sequence {i} gives different logits alone than in a batch ({diff:.2e}): batch elements leak"
        )


@pytest.mark.stage(10)
def test_eval_is_deterministic_and_training_uses_dropout(tf):
    torch.manual_seed(0)
    model = tf.Transformer(small_config(tf, dropout=0.3))
    model.eval()
    torch.testing.assert_close(
        model(SRC, TGT), model(SRC, TGT), rtol=0, atol=0, msg="two eval passes differ: dropout at eval?"
    )
    model.train()
    assert not torch.allclose(model(SRC, TGT), model(SRC, TGT)), "training mode must apply dropout (P_drop=0.3)"


@pytest.mark.stage(10)
def test_output_projection_shares_the_embedding_even_after_a_step(tf):
    torch.manual_seed(0)
    model = tf.Transformer(small_config(tf))
    assert model.generator.weight is model.tgt_embed.weight, "pre-softmax weights must be the embedding (§3.4)"
    assert model.src_embed.weight is model.tgt_embed.weight, "a shared vocabulary shares the source embedding too"
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(SRC, TGT).square().mean().backward()
    optimizer.step()
    assert model.generator.weight is model.tgt_embed.weight
    torch.testing.assert_close(model.generator.weight, model.tgt_embed.weight, msg="tied weights drifted apart")
    n_unique = len({p.data_ptr() for p in model.parameters()})
    assert n_unique == len(list(model.parameters())), "parameters() must list the shared matrix once"


@pytest.mark.stage(10)
def test_different_vocabularies_share_only_target_embedding_and_projection(tf):
    model = tf.Transformer(tf.TransformerConfig(13, 11, d_model=16, n_heads=4, n_layers=1, d_ff=32))
    assert model.src_embed.weight.shape == (13, 16) and model.tgt_embed.weight.shape == (11, 16)
    assert model.generator.weight is model.tgt_embed.weight
    assert model.src_embed.weight is not model.tgt_embed.weight


@pytest.mark.stage(10)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_all_padding_source_gives_finite_logits_and_gradients(tf, dtype):
    torch.manual_seed(0)
    model = tf.Transformer(small_config(tf)).to(dtype)
    src = tokens([0, 0, 0], [3, 4, 0])  # the first source is nothing but padding
    logits = model(src, TGT[:, :4])
    logits.float().sum().backward()
    assert torch.isfinite(logits).all(), f"an all-padding source gave NaN/inf logits in {dtype}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), (
        f"an all-padding source gave non-finite gradients in {dtype}"
    )


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
