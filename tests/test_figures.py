"""The talk's figures (talk/figures.py): every figure is written as a real PNG of slide size, and the numbers
behind the figures say what the paper says. The figures of trained models are drawn once per module, from a
model trained for a few steps only: these tests check the drawing and the data, not how well it learns."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from tests.conftest import ROOT, load_module

figures = load_module(ROOT / "talk" / "figures.py")
tf = figures.tf  # the transformer module the figures draw from

# ln_warmup and m30k: drawn from committed JSON (experiments/ln_warmup.json, talk/m30k.json)
CHEAP = ("masks", "positional_encoding", "mha_shapes", "scaling", "lr_schedule", "ln_warmup", "m30k")
TRAINED = ("attention_heatmaps", "residual_stream", "pitfall_training_curves", "translation")
FEW_STEPS = figures.Settings(
    demo_steps=10,
    pitfall_steps=2,
    pitfall_batch=4,
    workers=0,
    eval_examples=20,
    translate_steps=3,
    translate_numbers=400,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """Every figure, written once into a temporary folder; the trained ones from a few training steps."""
    out = tmp_path_factory.mktemp("figures")
    results = figures.generate(None, out, FEW_STEPS)
    return {result.name: result.path for result in results}


def test_generate_writes_exactly_the_figures_the_slides_embed(written):
    assert set(figures.NAMES) == set(CHEAP) | set(TRAINED), "the figure list changed: update the slides and tests"
    missing = [name for name in figures.NAMES if not (written[name].parent / f"{name}.png").is_file()]
    assert not missing, f"generate() did not write {missing}"


@pytest.mark.parametrize("name", CHEAP + TRAINED)
def test_figure_is_a_png_of_slide_size(written, name):
    path = written[name]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} does not start with the PNG signature"
    assert data[12:16] == b"IHDR", f"{path.name} has no IHDR chunk where a PNG has it"
    width, height = struct.unpack(">II", data[16:24])
    assert 1200 <= width <= 4000 and 600 <= height <= 3000, f"{path.name} is {width}x{height}, not slide-sized"
    assert 1.5 < width / height < 2.0, f"{path.name} is {width}x{height}, not a 16:9 slide shape"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width), (
        f"{path.name} decodes to {pixels.shape}, its header says {width}x{height}"
    )
    assert pixels[..., :3].std() > 0.05, f"{path.name} is (nearly) blank"


@pytest.mark.parametrize("name", CHEAP + TRAINED)
def test_no_figure_is_cut_at_its_edges(written, name):
    """Constrained layout keeps everything it places 4 px inside the figure, but not a suptitle (or label) too
    wide to fit: that runs off the edge and the slide shows it cut. The outermost pixels must be background."""
    pixels = matplotlib.image.imread(written[name])[..., :3]  # (H, W, 3) in [0, 1]
    ink = (pixels < 0.9).any(axis=-1)  # (H, W): anything drawn on the white background
    edges = {"top": ink[:2].any(), "bottom": ink[-2:].any(), "left": ink[:, :2].any(), "right": ink[:, -2:].any()}
    cut = [side for side, touched in edges.items() if touched]
    assert not cut, f"{name}.png is drawn up to its {' and '.join(cut)} edge: a title or label is cut off there"


def test_unknown_figure_name_is_refused_with_the_list(tmp_path):
    with pytest.raises(ValueError, match="no figure named 'mask'.*masks, positional_encoding"):
        figures.generate(["mask"], tmp_path)
    assert not list(tmp_path.iterdir()), "a refused request still wrote files"


def test_command_line_refuses_an_unknown_figure_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--only", "nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, f"bad usage should exit with status 2, got {exit_info.value.code}"
    assert len(err.strip().splitlines()) == 1 and "nope" in err, f"expected one line naming the bad figure: {err!r}"


# --- the data behind the figures ------------------------------------------------------------------


def test_mask_figure_shows_transformers_masks_on_an_example_with_padding():
    data = figures.mask_data()
    tokens = data.tokens
    T = len(tokens)
    assert tokens[0] == tf.BOS and tf.EOS in tokens and tokens[-1] == tf.PAD, f"not a padded decoder input: {tokens}"
    assert data.labels[0] == "BOS" and data.labels[-1] == "PAD", f"labels do not name the special tokens: {data.labels}"
    for i in range(T):
        for j in range(T):
            allowed = j <= i and tokens[j] != tf.PAD  # §3.2.3: no future position, no padding key
            assert data.combined[i, j] == allowed, f"combined mask wrong at query {i}, key {j}"
            assert data.causal[i, j] == (j <= i), f"causal mask wrong at query {i}, key {j}"
            assert data.padding[i, j] == (tokens[j] != tf.PAD), f"padding mask wrong at query {i}, key {j}"
    assert np.array_equal(data.combined, data.padding & data.causal), "combined is not padding AND causal"


def test_positional_encoding_figure_follows_section_3_5():
    pe = figures.positional_encoding_data(d_model=16, n_positions=50)
    pos = np.arange(50)[:, None]
    i = np.arange(8)[None, :]
    angle = pos / 10000 ** (2 * i / 16)
    assert np.allclose(pe[:, 0::2], np.sin(angle), atol=1e-6), "even dimensions are not sin(pos / 10000^(2i/d))"
    assert np.allclose(pe[:, 1::2], np.cos(angle), atol=1e-6), "odd dimensions are not cos(pos / 10000^(2i/d))"
    # the legend's wavelengths: angular frequency (read off the table at position 1) times wavelength = 2 pi
    for dim in (0, 3, 8, 15):
        omega = np.arcsin(pe[1, dim - dim % 2])  # sin(1 * omega), with omega <= 1 < pi / 2
        assert omega * figures.wavelength(dim, 16) == pytest.approx(2 * math.pi), f"wrong wavelength for dim {dim}"


def test_attention_shapes_are_recorded_from_a_forward_pass():
    sizes = dict(batch=3, tgt_len=2, src_len=5, d_model=24, n_heads=4)  # d_k = 6
    shapes = figures.mha_shapes_data(**sizes)
    expected = {
        "query": (3, 2, 24),
        "key": (3, 5, 24),
        "value": (3, 5, 24),
        "w_q": (3, 2, 24),
        "w_k": (3, 5, 24),
        "w_v": (3, 5, 24),
        "q_heads": (3, 4, 2, 6),
        "k_heads": (3, 4, 5, 6),
        "v_heads": (3, 4, 5, 6),
        "weights": (3, 4, 2, 5),
        "context": (3, 4, 2, 6),
        "merged": (3, 2, 24),
        "w_o": (3, 2, 24),
    }
    assert shapes == expected, f"recorded shapes differ from (B, H, T_q, d_k) bookkeeping: {shapes}"
    symbols = figures.shape_symbols(**sizes)
    assert [symbols[n] for n in shapes["weights"]] == ["B", "H", "T_q", "T_k"]
    with pytest.raises(ValueError, match="must all differ"):
        figures.shape_symbols(batch=8, tgt_len=5, src_len=7, d_model=512, n_heads=8)


def test_softmax_jacobian_norm_matches_autograd():
    logits = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jacobian = torch.autograd.functional.jacobian(lambda x: x.softmax(-1), logits)  # (6, 6)
    ours = figures.softmax_jacobian_norm(logits.softmax(-1))
    assert torch.allclose(ours, jacobian.norm()), f"{ours.item()} != autograd's {jacobian.norm().item()}"


def test_scaling_figure_shows_footnote_4():
    data = figures.scaling_data(d_ks=(4, 64, 1024), n_queries=400, example_d_k=64)
    scaled, unscaled = data.score_std["scaled"], data.score_std["unscaled"]
    assert np.allclose(scaled, 1.0, rtol=0.1), f"scaled logits should have std 1 for every d_k, got {scaled}"
    assert np.allclose(unscaled, np.sqrt([4, 64, 1024]), rtol=0.1), f"unscaled std should be sqrt(d_k): {unscaled}"
    top = data.max_weight["unscaled"]
    assert np.all(np.diff(top) > 0) and top[-1] > 0.9, f"without scaling the softmax should saturate: {top}"
    assert np.ptp(data.max_weight["scaled"]) < 0.1, f"with scaling the softmax should not drift: {data.max_weight}"
    assert data.gradient["unscaled"][-1] < 0.3 * data.gradient["scaled"][-1], "unscaled gradient did not vanish"


def test_lr_schedule_figure_follows_equation_3():
    step, rate = figures.lr_schedule_data(d_model=512, warmup_steps=4000, steps=16000)
    assert step[rate.argmax()] == 4000, f"the peak should be at warmup_steps=4000, is at {step[rate.argmax()]}"
    assert rate.max() == pytest.approx((512 * 4000) ** -0.5), "peak is not d_model^-0.5 * warmup^-0.5"
    assert rate[2000 - 1] == pytest.approx(2 * rate[1000 - 1]), "warm-up is not linear in the step"
    assert rate[16000 - 1] == pytest.approx(rate[4000 - 1] / 2), "decay is not 1/sqrt(step)"
    steps, rates, config = figures.demo_schedule_data(steps=300)
    formula = [tf.learning_rate(int(s), config.d_model, config.warmup_steps) for s in steps]
    assert np.allclose(rates, formula), "the demo's scheduler does not follow Eq. (3) from step 1"


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = tf.Transformer(tf.demo_config())
    src, tgt = tf.make_examples("reverse", 6, tf.N_SYMBOLS, 3, tf.MAX_LEN, torch.Generator().manual_seed(1))
    return model, src, tgt


def test_attention_maps_are_distributions_that_respect_the_masks(small_model):
    model, src, tgt = small_model
    row = int(figures.n_symbols(src).argmin())  # the most padding
    data = figures.attention_data(model, src[row : row + 1], tgt[row : row + 1])
    for name in ("encoder_self", "decoder_self", "cross"):
        weights = getattr(data, name)
        sums = weights.sum(axis=-1)
        # the maps are cut to the real tokens: rows still summing to 1 means no weight went to padding
        assert np.allclose(sums, 1.0, atol=1e-5), (
            f"{name}: rows do not sum to 1 over the real tokens, so padding got weight"
        )
    upper = np.triu(np.ones(data.decoder_self.shape[-2:], dtype=bool), k=1)
    assert np.all(data.decoder_self[..., upper] == 0), "the decoder self-attention looks at future positions"
    assert data.cross.shape[-2:] == (len(data.tgt_labels), len(data.src_labels))
    assert all(m.keep_weights is False for m in model.modules() if isinstance(m, tf.MultiHeadAttention)), (
        "attention_data left keep_weights switched on"
    )


def test_anti_diagonal_share():
    length = 5
    perfect = np.zeros((length + 1, length + 1))
    perfect[np.arange(length), length - 1 - np.arange(length)] = 1.0
    assert figures.anti_diagonal_share(perfect, length) == 1.0
    uniform = np.full((length + 1, length + 1), 1 / (length + 1))
    assert figures.anti_diagonal_share(uniform, length) == pytest.approx(1 / (length + 1))


def test_residual_stream_norms_follow_the_stream(small_model):
    model, src, tgt = small_model
    data = figures.residual_stream_data(model, src, tgt)
    n_enc = 2 * model.config.n_layers
    assert len(data.labels) == n_enc + 3 * model.config.n_layers
    # what leaves one Add & Norm enters the next one of the same stack
    assert np.allclose(data.stream_out[: n_enc - 1], data.stream_in[1:n_enc], rtol=1e-5), "encoder stream is broken"
    assert np.allclose(data.stream_out[n_enc:-1], data.stream_in[n_enc + 1 :], rtol=1e-5), "decoder stream is broken"
    # untrained LayerNorm (gain 1, bias 0) makes every token's vector have norm sqrt(d_model)
    assert np.allclose(data.stream_out, math.sqrt(model.config.d_model), rtol=1e-3), f"{data.stream_out}"
    with torch.no_grad():
        embedded = model.pos_encoding(model.src_embed(src)).norm(dim=-1)[src != tf.PAD].mean().item()
    assert data.stream_in[0] == pytest.approx(embedded, rel=1e-5), "the first norm is not the embedded source's"


def test_pitfall_runs_are_seeded_and_cover_every_silent_pitfall():
    from debug_pitfalls import PITFALLS

    runs = figures.PitfallRuns(steps=2, batch_size=4, seed=0)
    assert runs.runs[0][0] == "correct"
    assert [name for name, _ in runs.runs[1:]] == [p.name for p in PITFALLS if not p.loud]
    first = figures.train_curve("correct", 3, 4, 0)
    assert first == figures.train_curve("correct", 3, 4, 0), "the same seed gave different losses"
    assert first != figures.train_curve("correct", 3, 4, 1), "a different seed gave the same losses"


def test_crossing_share_counts_backward_steps_of_the_attention_peak():
    forward = np.eye(4)  # each target word attends to the next source piece: no step back
    crossed = np.eye(4)[[0, 2, 1, 3]]  # "forty two" from "zwei | undvierzig": the peak steps back once in three
    data = lambda cross: figures.TranslationData([], [], cross, {}, 0)  # noqa: E731
    assert figures.crossing_share(data(forward)) == 0.0
    assert figures.crossing_share(data(crossed)) == pytest.approx(1 / 3)
