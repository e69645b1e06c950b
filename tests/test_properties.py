"""Properties that any correct Transformer has, checked through the public API of `tf`.

`tf` is transformer.py in `make test`; `make test-bugs` runs this same file against each broken
variant in debug_pitfalls/ and expects every variant to fail at least one of these tests. The tests
judge behaviour only: they never read source code or look at which variant they are given.
Most run in float64, so that "unchanged" can mean equal to 1e-9 rather than "close enough".
Each test is marked `stage(n)` with the stage its piece arrives in (1 the embeddings, 2 the positional encoding,
3 attention, 4 multi-head attention, 10 the whole model, 11 the loss): in `make test` it also runs on every stage
from n on (tests/conftest.py), and `make check N=..` and the exercise notebook take their checks from these marks.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from debug_pitfalls import expensive

EXACT = 1e-9  # float64: what "unchanged" means
V = 11  # PAD, BOS, EOS and 8 symbols
# transformer.py's token layout, spelled out: the model arrives in stage 10, its PAD, BOS, ... constants in stage 11
PAD, BOS, FIRST_SYMBOL = 0, 1, 3


def small_config(tf, src_vocab_size: int = V, **overrides):
    settings = dict(d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, max_len=32, warmup_steps=10, pad_id=PAD)
    return tf.TransformerConfig(src_vocab_size, V, **(settings | overrides))


def small_model(tf, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return tf.Transformer(small_config(tf, **overrides)).double().eval()


@cache
def shared_model(tf) -> nn.Module:
    """small_model(tf), built once per implementation, for the tests that only run it (in eval mode, under
    torch.no_grad): building it costs more than the forward passes such a test makes. Never train or change it."""
    return small_model(tf)


def symbols(*shape: int, seed: int) -> torch.Tensor:
    """Random non-special tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_SYMBOL, V, shape, generator=generator)


def with_bos(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full((tokens.size(0), 1), BOS), tokens], dim=1)


def sources_and_more_padding() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources of different lengths, as in any batch (the second ends in padding), and the same two with
    three more padding tokens appended."""
    src = symbols(2, 5, seed=0)
    src[1, 3:] = PAD
    return src, torch.cat([src, torch.full((2, 3), PAD)], dim=1)  # (2, 5), (2, 8)


def expect(ok: bool, message: str) -> None:
    """assert, but the failure shows only the message (no tensors dumped by pytest's introspection)."""
    __tracebackhide__ = True
    if not ok:
        raise AssertionError(message)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- scaled dot-product attention, §3.2.1 -----------------------------------------------------


def qkv(t_q: int = 5, t_k: int = 6, d_k: int = 16, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, t, d_k, generator=generator, dtype=dtype) for t in (t_q, t_k, t_k)]


def attention_masks(t_q: int, t_k: int) -> dict[str, torch.Tensor | None]:
    """Masks with at least one allowed key per query, True = may attend."""
    causal = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)[None, None]  # (1, 1, T_q, T_k)
    padding = torch.tensor([[True] * t_k, [True] * (t_k - 2) + [False] * 2])[:, None, None, :]  # (2, 1, 1, T_k)
    generator = torch.Generator().manual_seed(1)
    random = torch.rand(2, 3, t_q, t_k, generator=generator) < 0.6
    random[..., 0] = True
    return {"no mask": None, "causal": causal, "padding": padding, "random": random}


@pytest.mark.stage(3)
@pytest.mark.parametrize("mask_name", ["no mask", "causal", "padding", "random"])
def test_attention_matches_pytorch(tf, mask_name):
    """Eq. (1) against PyTorch's own F.scaled_dot_product_attention, which reads True as 'may attend'."""
    q, k, v = qkv()
    mask = attention_masks(5, 6)[mask_name]
    out, _ = tf.scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    error = max_diff(out, expected)
    if error > EXACT:
        # name the likely cause when the output matches a known wrong formula
        causes = {"the scores are not divided by sqrt(d_k) (Eq. 1)": dict(attn_mask=mask, scale=1.0)}
        if mask is not None:
            causes["the mask is read the other way round (True taken as 'ignore')"] = dict(attn_mask=~mask)
        hint = next(
            (why for why, kw in causes.items() if max_diff(out, F.scaled_dot_product_attention(q, k, v, **kw)) < EXACT),
            "check the scaling, the softmax axis and the mask",
        )
        pytest.fail(
            f"attention ({mask_name}) differs from torch's F.scaled_dot_product_attention by {error:.3g}: {hint}",
            pytrace=False,
        )


@pytest.mark.stage(3)
def test_attention_weights_are_distributions(tf):
    """Each query's weights are a probability distribution over the keys, and zero on masked keys."""
    q, k, v = qkv(t_q=4, t_k=7)
    mask = attention_masks(4, 7)["random"]
    _, weights = tf.scaled_dot_product_attention(q, k, v, mask)
    sums = weights.sum(dim=-1)  # (B, H, T_q)
    worst = (sums - 1).abs().argmax().item()
    expect(
        torch.allclose(sums, torch.ones_like(sums), atol=1e-9),
        f"a query's attention weights sum to {sums.flatten()[worst].item():.3f} over the keys, not 1: "
        f"the softmax runs over the wrong axis (Eq. 1 normalises over the keys)",
    )
    leaked = weights.masked_select(~mask).abs().max().item()
    expect(
        leaked == 0,
        f"masked keys got attention weight up to {leaked:.3g}: the mask is not applied as True = may attend",
    )


# how close a low-precision attention comes to float64's: float32 keeps 24 bits of mantissa, bfloat16 8
AGREEMENT = {torch.float64: EXACT, torch.float32: 1e-5, torch.bfloat16: 5e-2}


@pytest.mark.stage(3)
@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["float64", "float32", "bfloat16"]
)
def test_fully_masked_query_attends_to_nothing(tf, dtype):
    """A query with every key masked (an empty sentence) gets a zero vector, not NaN, and finite gradients, in
    full and in mixed precision; the other queries are what F.scaled_dot_product_attention gives."""
    q, k, v = (t.requires_grad_() for t in qkv(dtype=dtype))
    mask = torch.ones(1, 1, 5, 6, dtype=torch.bool)
    mask[..., 2, :] = False  # query 2 may attend to nothing
    out, _ = tf.scaled_dot_product_attention(q, k, v, mask)
    out.float().sum().backward()
    expect(
        torch.isfinite(out).all(),
        f"a query whose keys are all masked got NaN in {dtype}: a softmax over a row of -inf is 0/0, "
        "and one NaN spreads to the loss and to every weight",
    )
    expect(out[..., 2, :].abs().max().item() == 0, "a query whose keys are all masked should attend to nothing (zeros)")
    for name, t in (("queries", q), ("keys", k), ("values", v)):
        expect(
            torch.isfinite(t.grad).all(), f"with a fully masked query the {name} get non-finite gradients in {dtype}"
        )
    with torch.no_grad():
        expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    error = max_diff(out.double(), expected)
    expect(
        error < AGREEMENT[dtype],
        f"with one query fully masked, the attention in {dtype} differs from F.scaled_dot_product_attention by {error:.3g}",
    )


@pytest.mark.stage(3)
def test_attention_works_in_float16(tf):
    """Mixed precision: a masked attention in float16 runs and agrees with float32."""
    q, k, v = qkv(t_q=6, t_k=6, dtype=torch.float32)
    mask = attention_masks(6, 6)["causal"]
    expected, _ = tf.scaled_dot_product_attention(q, k, v, mask)
    try:
        out, _ = tf.scaled_dot_product_attention(q.half(), k.half(), v.half(), mask)
    except RuntimeError as error:
        pytest.fail(
            f"masked attention fails in float16: {error}. (A fill value must exist in the dtype: float16 ends at -65504.)",
            pytrace=False,
        )
    error = max_diff(out.float(), expected)
    expect(error < 1e-2, f"masked attention in float16 differs from float32 by {error:.3g}")


# --- multi-head attention, §3.2.2 ------------------------------------------------------------


@pytest.mark.stage(4)
@pytest.mark.parametrize("kind", ["self-attention, causal", "cross-attention, padded keys"])
def test_multi_head_attention_matches_pytorch(tf, kind):
    """MultiHeadAttention against nn.MultiheadAttention with the same weights (which reads masks as True = ignore):
    the output, and each head's attention weights (kept for the plots)."""
    torch.manual_seed(0)
    d_model, n_heads = 32, 4
    ours = tf.MultiHeadAttention(d_model, n_heads).double()
    theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True).double()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
        theirs.out_proj.weight.copy_(ours.w_o.weight)
        theirs.out_proj.bias.copy_(ours.w_o.bias)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, d_model, generator=generator, dtype=torch.float64)
    if kind.startswith("self"):
        memory = x
        mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
        torch_kwargs = dict(attn_mask=~mask[0, 0])
    else:
        memory = torch.randn(3, 7, d_model, generator=generator, dtype=torch.float64)
        keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])  # (B, S): 7, 4 and 1 keys
        mask = keep[:, None, None, :]  # (B, 1, 1, S)
        torch_kwargs = dict(key_padding_mask=~keep)
    ours.keep_weights = True
    out = ours(x, memory, memory, mask)
    expected, expected_weights = theirs(x, memory, memory, average_attn_weights=False, **torch_kwargs)
    error = max_diff(out, expected)
    expect(
        error < EXACT,
        f"MultiHeadAttention ({kind}) differs from nn.MultiheadAttention with the same weights by {error:.3g}",
    )
    error = max_diff(ours.last_weights, expected_weights)  # (B, H, T, S) each
    expect(
        error < EXACT,
        f"the per-head attention weights ({kind}) differ from nn.MultiheadAttention's by {error:.3g}",
    )


@pytest.mark.stage(4)
def test_each_query_position_is_independent(tf):
    """Attention output i depends on query i and on the keys and values, never on another query."""
    torch.manual_seed(0)
    mha = tf.MultiHeadAttention(32, 4).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 32, generator=generator, dtype=torch.float64)
    memory = torch.randn(1, 7, 32, generator=generator, dtype=torch.float64)
    before = mha(x, memory, memory)
    for j in range(6):
        changed = x.clone()
        changed[0, j] += torch.randn(32, generator=generator, dtype=torch.float64)
        after = mha(changed, memory, memory)
        moved = [i for i in range(6) if i != j and max_diff(after[0, i], before[0, i]) > EXACT]
        expect(
            not moved,
            f"changing only query {j} changed the attention output at position(s) {moved}: "
            f"positions are mixed across heads (a missing transpose when splitting or merging the heads?)",
        )
        expect(max_diff(after[0, j], before[0, j]) > EXACT, f"changing query {j} did not change its own output")


# --- embeddings and positional encoding, §3.4 and §3.5 --------------------------------------


@pytest.mark.stage(1)
def test_embeddings_are_scaled_by_sqrt_d_model(tf):
    """§3.4: the embedding weights are multiplied by sqrt(d_model)."""
    torch.manual_seed(0)
    embed = tf.TokenEmbedding(V, 32)
    tokens = symbols(2, 5, seed=0)
    out = embed(tokens)
    expect(tuple(out.shape) == (2, 5, 32), f"embedding (2, 5) tokens gave {tuple(out.shape)}, not (2, 5, d_model)")
    expected = embed.weight[tokens] * math.sqrt(32)
    ratio = (out.norm() / embed.weight[tokens].norm()).item()
    expect(
        torch.allclose(out, expected, atol=1e-6),
        f"the embedding output is {ratio:.3g} times the embedding vectors, not sqrt(d_model) = {math.sqrt(32):.3g} (§3.4)",
    )


@cache
def sinusoids(d_model: int, max_len: int) -> torch.Tensor:
    """§3.5's table in float64, computed once per size (every implementation is compared with it)."""
    positions = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    evens = torch.arange(0, d_model, 2, dtype=torch.float64)  # (D/2,): the even dimensions 2i
    angle = positions / 10000 ** (evens / d_model)  # (max_len, D/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (max_len, D): sin and cos alternate


@pytest.mark.stage(2)
@pytest.mark.parametrize("d_model,max_len", [(32, 50), (512, 256)], ids=["d_model=32", "d_model=512"])
def test_positional_encoding_follows_the_paper(tf, d_model, max_len):
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), every entry,
    for a small model and for the base model's d_model."""
    pe = tf.PositionalEncoding(d_model, max_len).pe
    expect(tuple(pe.shape) == (max_len, d_model), f"pe is {tuple(pe.shape)}, not (max_len, d_model)")
    formula = sinusoids(d_model, max_len)
    right = (pe.double() - formula).abs() < 1e-6  # (max_len, D): NaN counts as wrong
    if not right.all():
        wrong = (~right).nonzero()  # (n, 2): (pos, dim)
        pos, dim = wrong[0].tolist()  # the first wrong entry, position by position
        two_i = dim - dim % 2
        expect(
            False,
            f"PE(pos={pos}, dimension {dim}) is {pe[pos, dim].item():.6f}, but the formula of §3.5 gives "
            f"{'sin' if dim % 2 == 0 else 'cos'}({pos} / 10000^({two_i}/{d_model})) = {formula[pos, dim].item():.6f}",
        )


# --- the whole model, §3 (stage 10 on): masks, padding, batches, dropout, weight tying ------


@pytest.mark.stage(10)
def test_decoder_cannot_see_the_future(tf):
    """§3.2.3: the output at position i depends on target tokens up to i only. For every position j, all the
    tokens from j on change at once: no output before j may move, and the output at j must."""
    model = shared_model(tf)
    src = symbols(2, 6, seed=0)
    tgt = with_bos(symbols(2, 6, seed=1))  # (2, 7)
    with torch.no_grad():
        before = model(src, tgt)
        for j in range(1, tgt.size(1)):
            changed = tgt.clone()
            changed[:, j:] = FIRST_SYMBOL + (changed[:, j:] - FIRST_SYMBOL + 1) % (V - FIRST_SYMBOL)  # all differ
            after = model(src, changed)
            for i in range(j):
                error = max_diff(after[:, i], before[:, i])
                expect(
                    error < EXACT,
                    f"output at position {i} changed (by {error:.3g}) when only the tokens from position {j} on "
                    f"changed: the decoder can see the future",
                )
            expect(
                max_diff(after[:, j], before[:, j]) > EXACT,
                f"changing the tokens from position {j} on did not change the output at position {j}: "
                f"the decoder does not read its own input",
            )


@pytest.mark.stage(10)
def test_encoder_ignores_padding(tf):
    """Padding appended to a source changes nothing at its real positions."""
    model = shared_model(tf)
    src, padded = sources_and_more_padding()
    with torch.no_grad():
        out = model.encode(src, tf.padding_mask(src, PAD))
        out_padded = model.encode(padded, tf.padding_mask(padded, PAD))
    real = (src != PAD)[..., None]  # (2, 5, 1)
    error = max_diff(out_padded[:, :5] * real, out * real)
    expect(
        error < EXACT,
        f"appending 3 padding tokens to the source changed the encoder output at real positions by {error:.3g}: "
        f"attention is reading padding (padding must be masked as keys)",
    )


@pytest.mark.stage(10)
def test_model_ignores_padding(tf):
    """Padding after the sources (which already differ in length) and after the targets changes no logit at a
    real target position; the model builds its own masks."""
    model = shared_model(tf)
    src, src_padded = sources_and_more_padding()
    tgt = with_bos(symbols(2, 4, seed=1))  # (2, 5)
    tgt_padded = torch.cat([tgt, torch.full((2, 2), PAD)], dim=1)  # (2, 7)
    with torch.no_grad():
        logits = model(src, tgt)
        logits_padded = model(src_padded, tgt_padded)
    error = max_diff(logits_padded[:, :5], logits)
    expect(
        error < EXACT,
        f"padding the source and the target changed the logits at real positions by {error:.3g}: "
        f"the model is reading padding",
    )


@pytest.mark.stage(10)
def test_batch_elements_are_independent(tf):
    """A sentence gets the same logits alone as in a batch beside a shorter, padded one and an empty one."""
    model = shared_model(tf)
    src = symbols(3, 5, seed=0)
    src[1, 3:] = PAD  # a shorter sentence
    src[2] = PAD  # an empty one (its own logits are test_empty_source_gives_finite_logits_and_gradients' business)
    tgt = with_bos(symbols(3, 4, seed=1))  # (3, 5)
    tgt[1, 3:] = PAD
    with torch.no_grad():
        batched = model(src, tgt)
        for i, kind in enumerate(["full-length", "padded"]):
            alone = model(src[i : i + 1], tgt[i : i + 1])
            error = max_diff(batched[i], alone[0])
            expect(
                error < EXACT,
                f"the {kind} sentence gets logits that differ by {error:.3g} alone and in a batch: "
                f"batch elements leak into each other",
            )


@pytest.mark.stage(10)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_empty_source_gives_finite_logits_and_gradients(tf, dtype):
    """A batch that holds an all-padding source still gives finite logits, and finite gradients to every weight."""
    torch.manual_seed(0)
    model = tf.Transformer(small_config(tf)).to(dtype)
    src = symbols(2, 5, seed=0)
    src[1] = PAD  # an empty sentence
    tgt = with_bos(symbols(2, 4, seed=1))
    logits = model(src, tgt)
    logits.float().sum().backward()
    expect(
        torch.isfinite(logits).all(),
        f"an all-padding source gave NaN logits in {dtype}: its queries have every key masked, and a softmax "
        f"over a row of -inf is 0/0",
    )
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    expect(not bad, f"an all-padding source gave non-finite gradients in {dtype} to {len(bad)} weights, e.g. {bad[:1]}")


@pytest.mark.stage(10)
def test_eval_mode_is_deterministic(tf):
    """§5.4: dropout regularises training only; model.eval() must give the same output every time."""
    model = small_model(tf, dropout=0.3)
    src = symbols(2, 6, seed=0)
    tgt = with_bos(symbols(2, 5, seed=1))
    torch.manual_seed(1)
    with torch.no_grad():
        model.train()
        expect(max_diff(model(src, tgt), model(src, tgt)) > 0, "in training mode dropout (§5.4) did nothing")
        model.eval()
        first, second = model(src, tgt), model(src, tgt)
    error = max_diff(first, second)
    expect(
        error == 0,
        f"two identical forward passes in eval mode differ by {error:.3g}: dropout is still active after model.eval()",
    )


@pytest.mark.stage(10)
@pytest.mark.parametrize("src_vocab_size", [V, V + 2], ids=["shared vocabulary", "separate vocabularies"])
def test_output_projection_shares_the_embedding(tf, src_vocab_size):
    """§3.4: the target embedding and the pre-softmax projection are one matrix, during training too. With one
    vocabulary for both languages the source embedding is that matrix as well; with two it is its own."""
    torch.manual_seed(0)
    model = tf.Transformer(small_config(tf, src_vocab_size=src_vocab_size))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    src, tgt = symbols(2, 5, seed=0), with_bos(symbols(2, 4, seed=1))  # (2, 5) each
    embedding_before = model.tgt_embed.weight.detach().clone()
    F.cross_entropy(model(src, tgt).flatten(0, 1), symbols(10, seed=2)).backward()
    optimizer.step()
    expect(max_diff(model.tgt_embed.weight, embedding_before) > 0, "a training step did not change the embedding")
    error = max_diff(model.generator.weight, model.tgt_embed.weight)
    expect(
        error == 0,
        f"after one training step the output projection and the target embedding differ by {error:.3g}: "
        f"they are two copies, not one shared matrix (§3.4)",
    )
    expect(model.generator.weight is model.tgt_embed.weight, "the output projection is not the embedding's Parameter")
    parameters = list(model.parameters())
    expect(len({p.data_ptr() for p in parameters}) == len(parameters), "parameters() lists a shared matrix twice")
    shared = model.src_embed.weight is model.tgt_embed.weight
    if src_vocab_size == V:
        expect(shared, "with one vocabulary for both languages the source embedding must be the same matrix too")
    else:
        expect(not shared, "two vocabularies need a source embedding of their own")
        expect(
            model.src_embed.weight.shape == (src_vocab_size, 32),
            f"the source embedding is {tuple(model.src_embed.weight.shape)}, not (src_vocab_size, d_model)",
        )


# --- the loss, §5.4 --------------------------------------------------------------------------


def logits_and_targets(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, V, generator=generator, dtype=torch.float64)
    target = torch.randint(FIRST_SYMBOL, V, (3, 6), generator=generator)
    target[1, 4:] = PAD
    target[2, 2:] = PAD
    return logits, target


@pytest.mark.stage(11)
def test_loss_matches_cross_entropy_without_smoothing(tf):
    """With epsilon_ls = 0 the loss is PyTorch's cross-entropy over the non-padding targets."""
    logits, target = logits_and_targets()
    loss = tf.label_smoothed_loss(logits, target, 0.0, PAD)
    expected = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)
    expect(
        abs(loss.item() - expected.item()) <= 1e-12,  # float64, the same sums: tighter than EXACT
        f"with no smoothing the loss is {loss.item():.4f}, but F.cross_entropy(..., ignore_index=pad) "
        f"gives {expected.item():.4f}",
    )


@pytest.mark.stage(11)
def test_loss_ignores_padding(tf):
    """The logits at padding positions do not count, and more padding in a batch (with any logits there) leaves
    the loss as it was: it averages over the real tokens only."""
    logits, target = logits_and_targets()
    loss = tf.label_smoothed_loss(logits, target, 0.1, PAD)
    generator = torch.Generator().manual_seed(1)
    other = logits.clone()
    other[target == PAD] = 10 * torch.randn(int((target == PAD).sum()), V, generator=generator, dtype=torch.float64)
    other_loss = tf.label_smoothed_loss(other, target, 0.1, PAD)
    expect(
        other_loss.item() == loss.item(),
        f"other logits at the padding positions changed the loss from {loss.item():.4f} to {other_loss.item():.4f}",
    )
    more_logits = torch.cat([logits, torch.randn(3, 4, V, generator=generator, dtype=torch.float64)], dim=1)
    more_target = torch.cat([target, torch.full((3, 4), PAD)], dim=1)
    padded_loss = tf.label_smoothed_loss(more_logits, more_target, 0.1, PAD)
    expect(
        abs(loss.item() - padded_loss.item()) < EXACT,
        f"appending padding changed the loss from {loss.item():.4f} to {padded_loss.item():.4f}: padding is counted",
    )


# --- training end to end (slow: the harness runs it only where nothing faster caught the bug) ---


@expensive
def test_learns_to_copy(tf):
    """A tiny model learns the copy task in 200 steps with train_step, and greedy decoding gets it right."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    n_symbols, min_len, max_len = 6, 2, 5
    vocab = tf.FIRST_SYMBOL + n_symbols
    config = tf.TransformerConfig(
        vocab, vocab, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, max_len=max_len + 2,
        label_smoothing=0.0, warmup_steps=30,
    )  # fmt: skip
    model = tf.Transformer(config)
    optimizer, scheduler = tf.make_optimizer(model, config)
    losses = []
    for _ in range(200):
        src, tgt = tf.make_examples("copy", 64, n_symbols, min_len, max_len, generator)
        losses.append(tf.train_step(model, src, tgt, optimizer, scheduler))
    test_src, test_tgt = tf.make_examples("copy", 64, n_symbols, min_len, max_len, generator)
    _, correct = tf.exact_match(model, test_src, test_tgt)
    loss, hits = sum(losses[-10:]) / 10, int(correct.sum())
    if hits < 32 and loss < 0.05:
        pytest.fail(
            f"training loss fell to {loss:.2g}, yet greedy decoding copied only {hits} of 64 sequences: "
            f"in training the decoder read the very token it had to predict (is its input shifted right?)",
            pytrace=False,
        )
    expect(hits >= 32, f"after 200 steps the model copies only {hits} of 64 sequences (training loss {loss:.3f})")
