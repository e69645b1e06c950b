"""The whole encoder-decoder against PyTorch's own `nn.Transformer`, with our weights copied into it.

If these pass, our model computes the same function as PyTorch's (post-LN, ReLU, its extra final LayerNorms
removed): same logits to 1e-10 in float64, with and without padding, and the same gradients. The pre-LN bonus
stage 15 has its own parity test, with nn.Transformer(norm_first=True), in tests/test_pre_ln.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.torch_reference import TorchReference
from tests.test_components import TOL64, small_config

SRC = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 3, 4, 0, 0], [5, 0, 0, 0, 0, 0]])
TGT = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 2, 0, 0], [1, 4, 4, 2, 0]])


def models(tf, vocab=(11, 11)):
    torch.manual_seed(0)
    config = dataclasses.replace(small_config(tf), src_vocab_size=vocab[0], tgt_vocab_size=vocab[1])
    ours = tf.Transformer(config).double().eval()
    return ours, TorchReference(ours).eval()


@pytest.mark.stage(10)
@pytest.mark.post_ln
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
@pytest.mark.parametrize("vocab", [(11, 11), (13, 11)], ids=["shared-vocab", "separate-vocab"])
def test_logits_equal_nn_transformer_in_float64(tf, padded, vocab):
    ours, theirs = models(tf, vocab)
    src, tgt = (SRC, TGT) if padded else (SRC[:1], TGT[:1])
    with torch.no_grad():
        diff = (ours(src, tgt) - theirs(src, tgt)).abs().max().item()
    assert diff <= TOL64, f"logits differ from torch.nn.Transformer by {diff:.2e} (allowed {TOL64:.0e})"


@pytest.mark.stage(10)
@pytest.mark.post_ln
def test_gradients_equal_nn_transformer_in_float64(tf):
    ours, theirs = models(tf)
    target = torch.randint(3, 11, TGT.shape, generator=torch.Generator().manual_seed(1))
    for model in (ours, theirs):
        logits = model(SRC, TGT)
        F.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    pairs = {
        "encoder W^Q of layer 0": (
            ours.encoder.layers[0].self_attn.w_q.weight.grad,
            theirs.body.encoder.layers[0].self_attn.in_proj_weight.grad[:16],
        ),
        "decoder cross-attention W^V of layer 1": (
            ours.decoder.layers[1].cross_attn.w_v.weight.grad,
            theirs.body.decoder.layers[1].multihead_attn.in_proj_weight.grad[32:],
        ),
        "decoder FFN W_2 of layer 1": (
            ours.decoder.layers[1].feed_forward.w_2.weight.grad,
            theirs.body.decoder.layers[1].linear2.weight.grad,
        ),
        "shared embedding": (ours.tgt_embed.weight.grad, theirs.tgt_embed.weight.grad),
    }
    for name, (a, b) in pairs.items():
        diff = (a - b).abs().max().item()
        assert diff <= TOL64, f"gradient of the {name} differs from torch.nn.Transformer's by {diff:.2e}"
