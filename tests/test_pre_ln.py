"""Bonus stage 15, pre-LN: each sub-layer is x + Dropout(Sublayer(LayerNorm(x))), each stack ends in a LayerNorm.

Checked by hand (the formula), against PyTorch's own pre-LN layers and model (`norm_first=True`, weights copied
with bench/torch_reference.py's copy functions, float64), and by the claim it exists for: at initialisation its
gradients do not grow towards the output the way post-LN's do. The whole-model properties (masks, causality,
padding, the loss, decoding) run on it through tests/conftest.py; the experiment gets a smoke test at tiny size.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch
from torch import nn

import transformer as post_ln
from bench.torch_reference import copy_decoder_layer, copy_encoder_layer
from stages.manifest import get_stage
from tests.conftest import ROOT, load_module

TOL64 = 1e-10
# nn.Transformer(norm_first=True) says it cannot use nested tensors: true, and nothing to do with these tests
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
SRC = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 3, 4, 0, 0], [5, 0, 0, 0, 0, 0]])  # (B, S), padded
TGT = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 2, 0, 0], [1, 4, 4, 2, 0]])  # (B, T)


def pre_ln():
    return load_module(get_stage(15).path)


def small_model(seed=0, n_layers=2, dtype=torch.float64):
    module = pre_ln()
    torch.manual_seed(seed)
    config = module.TransformerConfig(
        11, 11, d_model=16, n_heads=4, n_layers=n_layers, d_ff=32, dropout=0.0, max_len=32
    )
    model = module.Transformer(config).to(dtype)
    with torch.no_grad():  # LayerNorms start at weight 1, bias 0: give them values, so a misplaced norm shows
        for name, p in model.named_parameters():
            if ".norm." in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def torch_pre_ln_body(model) -> nn.Transformer:
    """nn.Transformer(norm_first=True) with the stage's weights: layers by bench's copy functions, and the final
    encoder and decoder norms, which nn.Transformer has and the post-LN parity test removes."""
    c = model.config
    body = nn.Transformer(
        c.d_model, c.n_heads, c.n_layers, c.n_layers, c.d_ff, 0.0, batch_first=True, norm_first=True
    ).double()
    with torch.no_grad():
        for ours, theirs in zip(model.encoder.layers, body.encoder.layers, strict=True):
            copy_encoder_layer(ours, theirs)
        for ours, theirs in zip(model.decoder.layers, body.decoder.layers, strict=True):
            copy_decoder_layer(ours, theirs)
        body.encoder.norm.load_state_dict(model.encoder.norm.state_dict())
        body.decoder.norm.load_state_dict(model.decoder.norm.state_dict())
    return body


def torch_logits(model, body, src, tgt):
    pad = model.config.pad_id
    future = torch.ones(tgt.size(1), tgt.size(1), dtype=torch.bool).triu(1)  # True = may NOT attend
    hidden = body(
        model.embed(model.src_embed, src),
        model.embed(model.tgt_embed, tgt),
        tgt_mask=future,
        src_key_padding_mask=src == pad,
        tgt_key_padding_mask=tgt == pad,
        memory_key_padding_mask=src == pad,
    )
    return model.generator(hidden)


def test_sublayer_is_x_plus_dropout_of_sublayer_of_layernorm_x_by_hand():
    module = pre_ln()
    torch.manual_seed(0)
    block = module.AddAndNorm(8, dropout=0.5).double()
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    w = torch.randn(8, 8, dtype=torch.float64)
    sublayer = lambda y: torch.tanh(y @ w)  # noqa: E731 - any function of the normalised input
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + block.norm.eps) * block.norm.weight + block.norm.bias
    block.eval()
    diff = (block(x, sublayer) - (x + sublayer(normed))).abs().max().item()
    assert diff <= TOL64, f"pre-LN sub-layer is not x + Sublayer(LayerNorm(x)) in eval mode (off by {diff:.1e})"
    block.train()
    torch.manual_seed(1)
    out = block(x, sublayer)
    torch.manual_seed(1)
    expected = x + nn.functional.dropout(sublayer(normed), 0.5, training=True)
    assert torch.allclose(out, expected, atol=TOL64), "dropout must act on the sub-layer's output, not on x"
    assert not torch.allclose(out, x + sublayer(normed)), "test setup: dropout dropped nothing"


def test_encoder_layer_equals_pytorch_norm_first_layer():
    model = small_model().eval()
    ours = model.encoder.layers[0]
    theirs = nn.TransformerEncoderLayer(16, 4, 32, 0.0, batch_first=True, norm_first=True).double().eval()
    with torch.no_grad():
        copy_encoder_layer(ours, theirs)
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    keep = (SRC != 0)[:, None, None, :]  # (B, 1, 1, S)
    diff = (ours(x, keep) - theirs(x, src_key_padding_mask=SRC == 0))[SRC != 0].abs().max().item()
    assert diff <= TOL64, (
        f"stage 15's encoder layer differs from nn.TransformerEncoderLayer(norm_first=True): {diff:.1e}"
    )


@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_logits_equal_nn_transformer_norm_first_in_float64(padded):
    model = small_model().eval()
    src, tgt = (SRC, TGT) if padded else (SRC[:1], TGT[:1])
    with torch.no_grad():
        diff = (model(src, tgt) - torch_logits(model, torch_pre_ln_body(model), src, tgt)).abs().max().item()
    assert diff <= TOL64, f"stage 15's logits differ from nn.Transformer(norm_first=True)'s by {diff:.1e}"


def test_gradients_equal_nn_transformer_norm_first_in_float64():
    model = small_model()
    body = torch_pre_ln_body(model)
    target = torch.randint(3, 11, TGT.shape, generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(SRC, TGT).flatten(0, 1), target.flatten()).backward()
    twin = small_model()  # the same weights again, for the embeddings around PyTorch's body
    nn.functional.cross_entropy(torch_logits(twin, body, SRC, TGT).flatten(0, 1), target.flatten()).backward()
    pairs = {
        "final encoder norm": (model.encoder.norm.weight.grad, body.encoder.norm.weight.grad),
        "final decoder norm": (model.decoder.norm.weight.grad, body.decoder.norm.weight.grad),
        "encoder layer 0 W^Q": (
            model.encoder.layers[0].self_attn.w_q.weight.grad,
            body.encoder.layers[0].self_attn.in_proj_weight.grad[:16],
        ),
        "decoder layer 1 norm before cross-attention": (
            model.decoder.layers[1].add_norm_2.norm.weight.grad,
            body.decoder.layers[1].norm2.weight.grad,
        ),
        "decoder layer 1 FFN W_2": (
            model.decoder.layers[1].feed_forward.w_2.weight.grad,
            body.decoder.layers[1].linear2.weight.grad,
        ),
        "shared embedding": (model.tgt_embed.weight.grad, twin.tgt_embed.weight.grad),
    }
    for name, (a, b) in pairs.items():
        diff = (a - b).abs().max().item()
        assert diff <= TOL64, f"gradient of the {name} differs from nn.Transformer(norm_first=True)'s by {diff:.1e}"


def test_stage_has_transformer_py_parameters_plus_two_final_norms_drawn_alike():
    """Same seed, same initial weights: the experiment compares the layouts from one starting point."""
    model = small_model(seed=3, dtype=torch.float32)
    torch.manual_seed(3)
    paper = post_ln.Transformer(post_ln.TransformerConfig(**asdict(model.config)))
    ours, theirs = model.state_dict(), paper.state_dict()
    extra = sorted(set(ours) - set(theirs))
    assert extra == ["decoder.norm.bias", "decoder.norm.weight", "encoder.norm.bias", "encoder.norm.weight"], extra
    assert set(theirs) <= set(ours), "stage 15 lost parameters of transformer.py"
    torch.manual_seed(3)
    fresh = pre_ln().Transformer(model.config)
    for name, value in paper.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), f"{name} starts from other weights than transformer.py's"


def test_post_ln_gradients_grow_towards_the_output_and_pre_ln_ones_do_not():
    """Xiong et al. (2020), Figure 3, in small: the reason for the warm-up, measured at N = 6."""
    module = pre_ln()
    torch.manual_seed(0)
    vocab = post_ln.FIRST_SYMBOL + post_ln.N_SYMBOLS
    config = module.TransformerConfig(vocab, vocab, d_model=32, n_heads=4, n_layers=6, d_ff=64, dropout=0.0)
    model = module.Transformer(config)
    src, tgt = post_ln.make_examples("reverse", 32, 10, 8, 12, torch.Generator().manual_seed(0))
    pre = module.gradient_norms(model, src, tgt)["decoder"]
    post = module.gradient_norms(module.post_ln_twin(model), src, tgt)["decoder"]
    assert post[-1] > 3 * post[0], f"post-LN's last decoder layer should get a much larger gradient: {post}"
    assert pre[-1] < 1.5 * pre[0], f"pre-LN's gradients should not grow towards the output: {pre}"


# -- the experiment, at tiny size -------------------------------------------------------------------------------


def test_schedule_with_full_warmup_is_equation_3_and_without_it_starts_at_the_peak():
    exp = load_module(ROOT / "experiments" / "ln_warmup.py")
    peak = exp.eq3_peak(64)
    for step in (1, 50, 199, 200, 201, 400, 5000):
        assert exp.schedule(step, peak, 200) == pytest.approx(post_ln.learning_rate(step, 64, 200), rel=1e-12), step
    assert exp.schedule(1, 3 * peak, 0) == 3 * peak, "no warm-up: the first step must use the peak"
    assert exp.schedule(200, peak, 20) == peak and exp.schedule(20, peak, 20) == peak, "short warm-up: ramp, hold"
    assert exp.schedule(10, peak, 20) == pytest.approx(peak / 2)
    assert exp.schedule(800, peak, 0) == pytest.approx(peak / 2), "after the hold every schedule decays alike"


def test_experiment_smoke_records_curves_scores_and_gradients(tmp_path):
    """The figure is drawn from the committed results by tests/test_figures.py (ln_warmup)."""
    exp = load_module(ROOT / "experiments" / "ln_warmup.py")
    out = tmp_path / "ln.json"
    argv = ["--steps", "3", "--seeds", "1", "--layers", "2", "--batch", "8", "--valid", "8"]
    argv += [
        "--warmups",
        "0,200",
        "--peaks",
        "1",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-figure",
    ]
    assert exp.main(argv) == 0
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 4, "2 layouts x 2 warm-ups x 1 peak x 1 seed"
    sane = data["runs"]
    for run in sane:
        assert len(run["loss"]) == 3 and all(math.isfinite(v) for v in run["loss"]), f"no finite curve: {run}"
        assert run["diverged_at"] is None and 0.0 <= run["exact_match"] <= 1.0 and run["valid_loss"] > 0
    post = {r["warmup"]: r["loss"] for r in sane if r["layout"] == "post-LN"}
    assert post[0][0] == post[200][0], "the first loss comes before any step: the same for every schedule"
    assert post[0][1] != post[200][1], "the second loss must show the first step's learning rate"
    grads = data["gradients"][0]
    assert set(grads) == {"post-LN", "pre-LN"} and all(len(grads[k]["decoder"]) == 2 for k in grads)


def test_experiment_rejects_bad_flags_with_one_line(capsys):
    exp = load_module(ROOT / "experiments" / "ln_warmup.py")
    for argv in (["--warmups", "a,b"], ["--peaks", "0"], ["--warmups", "500"], ["--workers", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            exp.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, f"{argv}: {err!r}"


def test_committed_results_cover_the_grid_and_the_readme_tables_are_generated_from_them():
    exp = load_module(ROOT / "experiments" / "ln_warmup.py")
    data = json.loads(exp.RESULTS.read_text(encoding="utf-8"))
    expected = {(r.layout, r.warmup, r.peak_factor, r.seed) for r in exp.grid(exp.WARMUPS, exp.PEAK_FACTORS, exp.SEEDS)}
    found = {(r["layout"], r["warmup"], r["peak_factor"], r["seed"]) for r in data["runs"]}
    assert found == expected, "experiments/ln_warmup.json is not the default grid: run `make experiment-ln`"
    assert data["setup"] == asdict(exp.Setup()), "experiments/ln_warmup.json was measured with other settings"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert exp.readme_block(data) in readme, (
        "README.md's post-LN/pre-LN tables differ from experiments/ln_warmup.json: "
        "run `python experiments/ln_warmup.py --readme`"
    )
