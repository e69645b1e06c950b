"""The bonus stages: fused attention (13) and the key/value cache (14).

Each bonus stage is transformer.py plus one change. The first tests keep them in step (the rule is in
stages/bonus/sync.py): a change to transformer.py that is not carried over to a bonus stage fails here,
naming the function that drifted, and `python tools/stages.py sync` carries it over.
The others check that each change computes what transformer.py computes: the fused kernel gives the
hand-written attention's outputs and gradients, and the cached decoders write greedy_decode's and
beam_search's tokens while finished sentences leave the batch.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

import transformer as tf
from stages.bonus.sync import DEMO_TITLE, check_in_step, rebuild
from stages.manifest import get_stage
from tests.conftest import ROOT, load_module

BONUS = [13, 14, 15]  # 15, pre-LN, has its own tests of what it computes in tests/test_pre_ln.py
BONUS_IDS = [f"stage{n}-{get_stage(n).slug}" for n in BONUS]
TOL64 = 1e-10  # float64: the same arithmetic up to summation order
TOL32 = 1e-5  # float32 attention outputs; the fused kernel sums in another order
TOL32_LOGITS = 1e-4  # float32 logits after a whole model of such sums


def fused_module():
    return load_module(get_stage(13).path)


def cache_module():
    return load_module(get_stage(14).path)


# -- keeping the bonus stages in step with transformer.py -------------------------------------------------


@pytest.mark.parametrize("number", BONUS, ids=BONUS_IDS)
def test_bonus_stage_is_transformer_py_plus_its_one_change(number):
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    bonus = get_stage(number).path.read_text(encoding="utf-8")
    problems = check_in_step(number, reference, bonus)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("number", BONUS, ids=BONUS_IDS)
def test_sync_rebuilds_an_in_step_bonus_stage_unchanged(number):
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    bonus = get_stage(number).path.read_text(encoding="utf-8")
    assert rebuild(number, reference, bonus) == bonus, (
        f"stages/bonus/sync.py would rewrite stage {number}: run `python tools/stages.py sync`"
    )


def test_sync_carries_a_change_of_transformer_py_over_and_keeps_the_stage_own_change():
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    bonus = get_stage(14).path.read_text(encoding="utf-8")
    line = "            x = layer(x, src_mask)  # (B, S, D) -> (B, S, D)"
    assert reference.count(line) == 1, "test setup: Encoder.forward's loop line changed; update this test"
    edited = reference.replace(line, line.replace("# (B, S, D)", "# edited (B, S, D)"))
    synced = rebuild(14, edited, bonus)
    assert "# edited (B, S, D)" in synced and "def cached_greedy_decode(" in synced, "sync lost a change"
    assert check_in_step(14, edited, synced) == [], "after sync the stage should be in step again"


def test_in_step_check_names_the_function_that_drifted():
    """The check above can fail: edit transformer.py's Encoder.forward but not the stage, and it says so."""
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    bonus = get_stage(13).path.read_text(encoding="utf-8")
    line = "            x = layer(x, src_mask)  # (B, S, D) -> (B, S, D)"
    assert reference.count(line) == 1, "test setup: Encoder.forward's loop line changed; update this test"
    edited = reference.replace(line, line.replace("x = layer(x, src_mask)", "x = layer(x, src_mask) * 1.0"))
    problems = check_in_step(13, edited, bonus)
    assert len(problems) == 1 and "`Encoder.forward`" in problems[0], problems
    # and an undeclared change inside the stage itself
    problems = check_in_step(13, reference, bonus.replace("def padding_mask(tokens", "def padding_mask(  tokens"))
    assert len(problems) == 1 and "`padding_mask`" in problems[0], problems


@pytest.mark.parametrize("number", BONUS, ids=BONUS_IDS)
def test_bonus_stage_is_listed_as_bonus_with_a_demo(number):
    stage = get_stage(number)
    assert stage.bonus and stage.path.parent.name == "bonus", f"stage {number} must be a bonus stage in stages/bonus/"
    text = stage.path.read_text(encoding="utf-8")
    assert DEMO_TITLE in text, f"stage {number} has no demo block titled {DEMO_TITLE!r}"


@pytest.mark.parametrize("number", BONUS, ids=BONUS_IDS)
def test_bonus_demo_rejects_unknown_flags_with_one_line(number, capsys):
    module = load_module(get_stage(number).path)
    with pytest.raises(SystemExit) as exit_info:
        module.demo(["--bogus"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, f"expected one line and status 2: {err!r}"


# -- stage 13: fused attention ------------------------------------------------------------------------------


def attention_inputs(dtype, B=3, H=2, T_q=5, T_k=7, d_k=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, d_k, generator=generator, dtype=dtype)
    k = torch.randn(B, H, T_k, d_k, generator=generator, dtype=dtype)
    v = torch.randn(B, H, T_k, d_k, generator=generator, dtype=dtype)
    keep = torch.ones(B, T_k, dtype=torch.bool)
    keep[1, 4:] = False  # padding at the end
    keep[2] = False  # an all-padding sequence: its queries have nothing to attend to
    return q, k, v, keep


def masks_for(keep, T_q, T_k):
    padding = keep[:, None, None, :]  # (B, 1, 1, T_k)
    causal = torch.ones(T_q, T_k, dtype=torch.bool).tril()[None, None]  # (1, 1, T_q, T_k)
    return {"no mask": None, "padding": padding, "causal": causal, "padding+causal": padding & causal}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, TOL64), (torch.float32, TOL32)], ids=["float64", "float32"])
@pytest.mark.parametrize("mask_name", ["no mask", "padding", "causal", "padding+causal"])
def test_fused_attention_equals_hand_written_with_gradients(dtype, tol, mask_name):
    q, k, v, keep = attention_inputs(dtype)
    mask = masks_for(keep, q.size(-2), k.size(-2))[mask_name]
    fused_mha = fused_module().MultiHeadAttention(16, 2).to(dtype)  # d_model 16, 2 heads of d_k = 8
    for x in (q, k, v):
        x.requires_grad_(True)
    hand, _ = tf.scaled_dot_product_attention(q, k, v, mask)
    hand_grads = torch.autograd.grad((hand * hand).sum(), (q, k, v))
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    fused_grads = torch.autograd.grad((fused * fused).sum(), (q, k, v))
    diff = (hand - fused).abs().max().item()
    assert diff <= tol, (
        f"fused attention differs from Eq. (1) by {diff:.1e} with {mask_name} ({dtype}), allowed {tol:.0e}"
    )
    for name, a, b in zip("qkv", hand_grads, fused_grads, strict=True):
        diff = (a - b).abs().max().item()
        assert diff <= 10 * tol, f"gradient with respect to {name} differs by {diff:.1e} with {mask_name} ({dtype})"
    # and the stage's layer routes through the same kernel: same weights, one flag apart
    x = torch.randn(3, 7, 16, dtype=dtype)
    layer_mask = None if mask is None else masks_for(keep, 7, 7)[mask_name]
    with torch.no_grad():
        fused_out = fused_mha(x, x, x, layer_mask)
        fused_mha.keep_weights = True
        hand_out = fused_mha(x, x, x, layer_mask)
    diff = (fused_out - hand_out).abs().max().item()
    assert diff <= tol, f"the fused MultiHeadAttention differs from its hand-written path by {diff:.1e} ({mask_name})"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_fused_attention_gives_zeros_where_every_key_is_masked(dtype):
    q, k, v, keep = attention_inputs(dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    assert torch.isfinite(out).all(), "F.scaled_dot_product_attention gives NaN for an all-padding sequence"
    assert torch.equal(out[2], torch.zeros_like(out[2])), (
        "F.scaled_dot_product_attention no longer returns zeros for a query whose keys are all masked, "
        "as the hand-written path does (deviation 3): stage 13 must handle such rows itself"
    )


SRC = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 3, 4, 0, 0], [5, 0, 0, 0, 0, 0]])  # (B, S), padded
TGT = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 2, 0, 0], [1, 4, 4, 2, 0]])  # (B, T)


def twin_models(dtype):
    """transformer.py's model and stage 13's, with the same weights."""
    torch.manual_seed(0)
    config = tf.TransformerConfig(11, 11, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.0, max_len=32)
    ours = tf.Transformer(config).to(dtype)
    module = fused_module()
    fused = module.Transformer(module.TransformerConfig(**asdict(config))).to(dtype)
    fused.load_state_dict(ours.state_dict())
    return ours, fused


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, TOL64), (torch.float32, TOL32_LOGITS)], ids=["float64", "float32"]
)
def test_fused_model_equals_transformer_py_logits_and_gradients(dtype, tol):
    ours, fused = twin_models(dtype)
    labels = torch.randint(3, 11, TGT.shape, generator=torch.Generator().manual_seed(1))
    logits = {}
    for name, model in (("transformer.py", ours), ("stage 13", fused)):
        logits[name] = model(SRC, TGT)
        tf.label_smoothed_loss(logits[name], labels, 0.1, pad_id=0).backward()
    diff = (logits["transformer.py"] - logits["stage 13"]).abs().max().item()
    assert diff <= tol, f"stage 13's logits differ from transformer.py's by {diff:.1e} ({dtype}), allowed {tol:.0e}"
    for (name, p), q in zip(ours.named_parameters(), fused.parameters(), strict=True):
        diff = (p.grad - q.grad).abs().max().item()
        assert diff <= 10 * tol, f"gradient of {name} differs between transformer.py and stage 13 by {diff:.1e}"


def test_fused_layer_still_keeps_weights_for_plots_and_checks_masks():
    module = fused_module()
    torch.manual_seed(0)
    mha = module.MultiHeadAttention(16, 4)
    x = torch.randn(2, 5, 16)
    mha(x, x, x)
    assert mha.last_weights is None, "the fused path has no weights to keep, but last_weights was set"
    mha.keep_weights = True
    mha(x, x, x)
    assert mha.last_weights is not None and mha.last_weights.shape == (2, 4, 5, 5), "keep_weights=True lost the weights"
    mha.keep_weights = False
    with pytest.raises(TypeError, match="torch.bool"):
        mha(x, x, x, torch.ones(2, 1, 1, 5))  # a float mask would be added to the scores, not read as True/False
    with pytest.raises(ValueError, match="cannot broadcast"):
        mha(x, x, x, torch.ones(2, 1, 1, 4, dtype=torch.bool))


# -- stage 14: the key/value cache --------------------------------------------------------------------------


def decoding_models(seed, dtype=torch.float32, vocab=20, max_len=40):
    """transformer.py's model and stage 14's with the same weights. Untrained; its output projection is
    untied from the embedding so that it does not keep repeating the last token, which would let a
    cache that mixes up positions go unnoticed."""
    torch.manual_seed(seed)
    config = tf.TransformerConfig(
        vocab, vocab, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, max_len=max_len
    )
    ours = tf.Transformer(config).to(dtype).eval()
    ours.generator.weight = torch.nn.Parameter(torch.randn(vocab, 32, dtype=dtype))
    module = cache_module()
    cached = module.Transformer(module.TransformerConfig(**asdict(config))).to(dtype).eval()
    cached.generator.weight = torch.nn.Parameter(torch.empty(vocab, 32, dtype=dtype))
    cached.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(tf.FIRST_SYMBOL, vocab, (5, 9), generator=generator)  # (B, S)
    src[1, 5:] = tf.PAD  # padding in the source
    src[3, 2:] = tf.PAD
    return ours, cached, module, src


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
def test_cached_decoding_writes_greedy_decodes_tokens(seed):
    ours, cached, module, src = decoding_models(seed)
    plain = tf.greedy_decode(ours, src, 30, tf.BOS)
    fast = module.cached_greedy_decode(cached, src, 30, tf.BOS)
    assert len(set(plain[:, 1:].flatten().tolist())) > 3, "test setup: the model writes too few distinct tokens"
    assert torch.equal(plain, fast), f"the cached decoder wrote other tokens:\n{plain}\nvs\n{fast}"


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
def test_cached_decoding_handles_the_end_token_like_greedy_decode(seed):
    ours, cached, module, src = decoding_models(seed)
    free = tf.greedy_decode(ours, src, 30, tf.BOS)
    eos = int(free[0, 6])  # call the token sequence 0 writes at step 6 the end token
    plain = tf.greedy_decode(ours, src, 30, tf.BOS, eos)
    fast = module.cached_greedy_decode(cached, src, 30, tf.BOS, eos)
    assert torch.equal(plain, fast), f"with end token {eos} the cached decoder wrote:\n{fast}\ninstead of\n{plain}"
    assert (plain[0] == tf.PAD).any(), "test setup: sequence 0 should stop early and be padded"


def test_cached_decoding_stops_early_when_every_sequence_has_ended():
    ours, cached, module, src = decoding_models(0)
    free = tf.greedy_decode(ours, src, 30, tf.BOS)
    eos = int(free[0, 3])
    ending = (free[:, 1:] == eos).any(dim=1)  # (B,): the sequences that write this token at some step
    src = src[ending]
    assert len(src) >= 2, "test setup: fewer than two sequences write the chosen end token"
    plain = tf.greedy_decode(ours, src, 30, tf.BOS, eos)
    fast = module.cached_greedy_decode(cached, src, 30, tf.BOS, eos)
    assert plain.size(1) < 31, "test setup: greedy_decode did not stop early"
    assert torch.equal(plain, fast), f"the cached decoder does not stop where greedy_decode stops:\n{fast}\nvs\n{plain}"


def test_each_cached_step_gives_the_full_decoders_last_position_in_float64():
    ours, cached, module, src = decoding_models(3, dtype=torch.float64)
    tokens = tf.greedy_decode(ours, src, 12, tf.BOS)  # (B, 13)
    src_mask = tf.padding_mask(src, 0)
    with torch.no_grad():
        memory = cached.encode(src, src_mask)
        cache = module.KeyValueCache(cached, memory, src_mask)
        for t in range(12):
            step = module.decode_step(cached, tokens[:, t], cache)  # (B, D)
            full = ours.decode(tokens[:, : t + 1], memory, src_mask, tf.subsequent_mask(t + 1))[:, -1]  # (B, D)
            diff = (step - full).abs().max().item()
            assert diff <= TOL64, f"step {t}: the cached decoder's output differs from the full decoder's by {diff:.1e}"


def test_cache_runs_the_encoder_once_and_the_decoder_on_one_token_per_step():
    _, cached, module, src = decoding_models(0)
    calls = {"encoder": 0, "memory keys": 0, "query lengths": []}
    cached.encoder.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
    for layer in cached.decoder.layers:
        layer.cross_attn.w_k.register_forward_hook(
            lambda *_: calls.__setitem__("memory keys", calls["memory keys"] + 1)
        )
        layer.self_attn.w_q.register_forward_hook(lambda _m, args, _out: calls["query lengths"].append(args[0].size(1)))
    out = module.cached_greedy_decode(cached, src, 20, tf.BOS)
    n_layers = len(cached.decoder.layers)
    assert out.size(1) == 21, "test setup: expected 20 steps"
    assert calls["encoder"] == 1, f"the encoder ran {calls['encoder']} times; it should run once"
    assert calls["memory keys"] == n_layers, (
        f"cross-attention keys were computed {calls['memory keys']} times; once per layer ({n_layers}) is enough"
    )
    assert calls["query lengths"] == [1] * (20 * n_layers), (
        f"each step should feed the decoder one new token, got query lengths {sorted(set(calls['query lengths']))}"
    )


def test_cached_decoding_validates_like_greedy_decode_and_restores_training_mode():
    _, cached, module, src = decoding_models(0, max_len=10)
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        module.cached_greedy_decode(cached, src, 0, tf.BOS)
    with pytest.raises(ValueError, match="exceed the model's max_len=10"):
        module.cached_greedy_decode(cached, src, 10, tf.BOS)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        module.cached_greedy_decode(cached, src + 100, 5, tf.BOS)
    cached.train()
    module.cached_greedy_decode(cached, src, 3, tf.BOS)
    assert cached.training, "cached_greedy_decode left the model in eval mode"


def test_cached_decoding_accepts_transformer_py_models():
    """The benchmark hands transformer.py's own model to the stage's decoder."""
    ours, _, module, src = decoding_models(1)
    assert torch.equal(module.cached_greedy_decode(ours, src, 15, tf.BOS), tf.greedy_decode(ours, src, 15, tf.BOS)), (
        "cached_greedy_decode on a transformer.py model writes other tokens than greedy_decode"
    )


def end_token(free: torch.Tensor) -> int:
    """A token that the sequences of free (B, T) first write at many different steps (or never): called the end
    token, it makes the sentences of a batch finish at different steps, some not before max_len."""

    def first_steps(token):
        return {int((row == token).nonzero()[0]) if (row == token).any() else None for row in free[:, 1:]}

    return max(range(tf.FIRST_SYMBOL, int(free.max()) + 1), key=lambda token: (len(first_steps(token)), -token))


def finishing_steps(out: torch.Tensor, eos: int) -> list[int | None]:
    """The step at which each answer (B, T) writes eos, None for one cut off at max_len."""
    return [int((row[1:] == eos).nonzero()[0]) + 1 if (row[1:] == eos).any() else None for row in out]


def stretched(row: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(row, (0, width - row.size(0)), value=tf.PAD)  # (T,) -> (width,): answers of different widths


@pytest.mark.parametrize(
    "seed,beam,alpha",
    [(0, 2, 0.6), (1, 4, 0.0), (4, 4, 0.6), (1, 3, 2.0)],
    ids=["seed0-beam2-alpha0.6", "seed1-beam4-alpha0", "seed4-beam4-alpha0.6", "seed1-beam3-alpha2"],
)
def test_cached_beam_search_gives_beam_searchs_tokens_and_scores(seed, beam, alpha):
    ours, cached, module, src = decoding_models(seed, dtype=torch.float64)
    eos = end_token(tf.greedy_decode(ours, src, 20, tf.BOS))
    plain, plain_scores = tf.beam_search(ours, src, 20, tf.BOS, eos, beam, alpha, return_scores=True)
    fast, fast_scores = module.cached_beam_search(cached, src, 20, tf.BOS, eos, beam, alpha, return_scores=True)
    assert len(set(finishing_steps(plain, eos))) >= 2, "test setup: the sentences should finish at different steps"
    assert torch.equal(plain, fast), (
        f"the cached beam search wrote other tokens than beam_search (end token {eos}): does the cache follow the "
        f"hypotheses topk picked, and do finished sentences leave it row for row?\n{plain}\nvs\n{fast}"
    )
    diff = (plain_scores - fast_scores).abs().max().item()
    assert diff <= 1e-9, f"the cached beam search scores its answers {diff:.1e} away from beam_search's (float64)"


@pytest.mark.parametrize("seed", [1, 8], ids=lambda s: f"seed{s}")
def test_cached_beam_of_one_is_greedy_decoding_at_alpha_0_and_beam_searchs_beam_of_one_above(seed):
    ours, cached, module, src = decoding_models(seed, dtype=torch.float64)
    eos = end_token(tf.greedy_decode(ours, src, 20, tf.BOS))
    greedy = tf.greedy_decode(ours, src, 20, tf.BOS, eos)
    assert len(set(finishing_steps(greedy, eos))) >= 2, "test setup: the sentences should finish at different steps"
    for name, out in (
        ("cached_greedy_decode", module.cached_greedy_decode(cached, src, 20, tf.BOS, eos)),
        ("cached_beam_search, beam 1, alpha 0", module.cached_beam_search(cached, src, 20, tf.BOS, eos, 1, 0.0)),
    ):
        assert torch.equal(out, greedy), f"{name} wrote other tokens than greedy_decode:\n{out}\nvs\n{greedy}"
    # at alpha 2 a beam of one goes on past greedy's end where a longer answer scores better: a sentence is not
    # decided when its one hypothesis finishes
    plain, plain_scores = tf.beam_search(ours, src, 20, tf.BOS, eos, 1, 2.0, return_scores=True)
    fast, fast_scores = module.cached_beam_search(cached, src, 20, tf.BOS, eos, 1, 2.0, return_scores=True)
    assert finishing_steps(plain, eos) != finishing_steps(greedy, eos), (
        "test setup: at alpha 2 some answer of beam 1 should go on past greedy's end"
    )
    assert torch.equal(plain, fast), (
        f"cached_beam_search with beam 1 and alpha 2 wrote other tokens than beam_search (end token {eos}): was a "
        f"sentence decided when its one hypothesis finished?\n{plain}\nvs\n{fast}"
    )
    diff = (plain_scores - fast_scores).abs().max().item()
    assert diff <= 1e-9, f"the cached beam search scores its answers {diff:.1e} away from beam_search's (float64)"


@pytest.mark.parametrize("beam", [1, 3], ids=["greedy", "beam3"])
def test_finished_sentences_leave_the_batch_and_no_answer_changes(beam):
    _, cached, module, src = decoding_models(1)
    eos = end_token(tf.greedy_decode(cached, src, 20, tf.BOS))

    def decode(s):
        if beam == 1:
            return module.cached_greedy_decode(cached, s, 20, tf.BOS, eos)
        return module.cached_beam_search(cached, s, 20, tf.BOS, eos, beam_size=beam)

    rows = []  # the rows the decoder computes at each step
    hook = cached.decoder.layers[0].self_attn.w_q.register_forward_hook(lambda _m, a, _o: rows.append(a[0].size(0)))
    try:
        batch = decode(src)
    finally:
        hook.remove()
    steps = finishing_steps(batch, eos)
    assert len(set(steps)) >= 3, f"test setup: the sentences should finish at several different steps, {steps}"
    B = src.size(0)
    if beam == 1:  # a sentence is computed at step t exactly when it has not written eos before t
        expected = [sum(s is None or s >= t for s in steps) for t in range(1, len(rows) + 1)]
        assert rows == expected, f"rows computed per step {rows}, but only unfinished sentences should be: {expected}"
    assert rows[0] == beam * B and rows[-1] < rows[0] and rows == sorted(rows, reverse=True), (
        f"rows computed per step {rows}: a sentence whose answer is decided should leave the batch"
    )
    for i in range(B):
        length = int((src[i] != tf.PAD).sum())
        alone = decode(src[i : i + 1, :length])[0]  # (T_i,)
        assert torch.equal(stretched(alone, batch.size(1)), batch[i]), (
            f"sentence {i} decoded alone gets {alone.tolist()}, in the batch {batch[i].tolist()}: "
            "dropping the finished sentences mixed up the rows of the others"
        )


def own_max_len(src: torch.Tensor, extra: int) -> torch.Tensor:
    """Each sentence's own max_len (B,), from its own length, never from the batch's padded width."""
    return ((src != tf.PAD).sum(dim=1) + extra).clamp(min=1)  # (B,)


@pytest.mark.parametrize(
    "seed,beam,alpha",
    [(1, 1, 0.6), (5, 1, 0.6), (1, 3, 0.6), (5, 4, 0.0), (9, 3, 2.0)],
    ids=["seed1-greedy", "seed5-greedy", "seed1-beam3-alpha0.6", "seed5-beam4-alpha0", "seed9-beam3-alpha2"],
)
def test_cached_decoders_with_a_max_len_per_sentence_give_the_plain_tokens_and_scores(seed, beam, alpha):
    # seed 9 with alpha 2: a bound computed with another sentence's max_len stops too early and changes answers
    ours, cached, module, src = decoding_models(seed, dtype=torch.float64)
    eos = end_token(tf.greedy_decode(ours, src, 20, tf.BOS))
    max_len = own_max_len(src, extra=-1)  # (B,): 8, 4, 8, 1, 8
    if beam == 1:
        plain = tf.greedy_decode(ours, src, max_len, tf.BOS, eos)
        fast = module.cached_greedy_decode(cached, src, max_len, tf.BOS, eos)
        plain_scores = fast_scores = torch.zeros(1)
    else:
        plain, plain_scores = tf.beam_search(ours, src, max_len, tf.BOS, eos, beam, alpha, return_scores=True)
        fast, fast_scores = module.cached_beam_search(
            cached, src, max_len, tf.BOS, eos, beam, alpha, return_scores=True
        )
    steps = finishing_steps(plain, eos)
    assert None in steps and {None} != set(steps), f"test setup: some answers should end, some be cut off: {steps}"
    for i in range(src.size(0)):
        assert (plain[i, 1 + max_len[i] :] == tf.PAD).all(), (
            f"sentence {i} wrote past its own max_len {int(max_len[i])}: {plain[i].tolist()}"
        )
    assert torch.equal(plain, fast), (
        f"with a max_len per sentence the cached decoder wrote other tokens than transformer.py's (end token "
        f"{eos}):\n{plain}\nvs\n{fast}"
    )
    diff = (plain_scores - fast_scores).abs().max().item()
    assert diff <= 1e-9, f"the cached beam search scores its answers {diff:.1e} away from beam_search's (float64)"


def looping(model: tf.Transformer) -> tf.Transformer:
    """The model with an output layer that never writes the end token or padding (a bias of -100 there): every
    answer runs on to its max_len, as a model that has not learnt to stop loops until it is cut off."""
    generator = torch.nn.Linear(model.config.d_model, model.config.tgt_vocab_size, dtype=model.generator.weight.dtype)
    with torch.no_grad():
        generator.weight.copy_(model.generator.weight)
        generator.bias.zero_()
        generator.bias[[tf.EOS, tf.PAD]] = -100.0
    model.generator = generator
    return model


@pytest.mark.parametrize("beam", [1, 3], ids=["greedy", "beam3"])
def test_cached_decoders_with_its_own_max_len_a_looping_answer_is_the_same_beside_a_much_longer_sentence(beam):
    _, cached, module, _ = decoding_models(2)
    cached = looping(cached)
    src = torch.randint(tf.FIRST_SYMBOL, 20, (2, 14), generator=torch.Generator().manual_seed(2))  # (2, S)
    src[0, 2:] = tf.PAD  # 2 tokens beside 14
    max_len = own_max_len(src, extra=10)  # (2,): 12 and 24

    def decode(s, n):
        if beam == 1:
            return module.cached_greedy_decode(cached, s, n, tf.BOS, tf.EOS)
        return module.cached_beam_search(cached, s, n, tf.BOS, tf.EOS, beam_size=beam)

    batch = decode(src, max_len)
    written = (batch[:, 1:] != tf.PAD).sum(dim=1)  # (2,)
    assert written.tolist() == max_len.tolist(), (
        f"the answers wrote {written.tolist()} tokens: a model that never writes the end token must be cut off at "
        f"each sentence's own max_len, {max_len.tolist()}"
    )
    for i in range(2):
        length = int((src[i] != tf.PAD).sum())
        alone = decode(src[i : i + 1, :length], int(max_len[i]))[0]  # (T_i,)
        assert torch.equal(stretched(alone, batch.size(1)), batch[i]), (
            f"sentence {i} with max_len {int(max_len[i])}: alone {alone.tolist()}, beside a sentence of another "
            f"length {batch[i].tolist()}: a max_len per sentence must cut each answer off at its own"
        )


def test_cached_beam_search_runs_the_encoder_once_and_the_decoder_on_one_token_per_step():
    _, cached, module, src = decoding_models(0)
    calls = {"encoder": 0, "memory keys": 0, "query lengths": []}
    cached.encoder.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
    for layer in cached.decoder.layers:
        layer.cross_attn.w_k.register_forward_hook(
            lambda *_: calls.__setitem__("memory keys", calls["memory keys"] + 1)
        )
        layer.self_attn.w_q.register_forward_hook(lambda _m, args, _out: calls["query lengths"].append(args[0].size(1)))
    module.cached_beam_search(cached, src, 20, tf.BOS, tf.EOS, beam_size=4)
    assert calls["encoder"] == 1, f"the encoder ran {calls['encoder']} times; it should run once"
    assert calls["memory keys"] == len(cached.decoder.layers), (
        f"cross-attention keys were computed {calls['memory keys']} times; once per layer is enough"
    )
    assert set(calls["query lengths"]) == {1}, (
        f"each step should feed the decoder one new token, got query lengths {sorted(set(calls['query lengths']))}"
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(max_len=0), "max_len must be a positive integer"),
        (dict(max_len=10), "exceed the model's max_len=10"),
        (dict(beam_size=0), r"beam_size must be an integer in \[1, 20\]"),
        (dict(beam_size=21), r"beam_size must be an integer in \[1, 20\]"),
        (dict(alpha=-0.5), "alpha must be >= 0"),
        (dict(src_offset=100), "outside the vocabulary"),
    ],
    ids=["max_len-0", "max_len-too-long", "beam-0", "beam-wider-than-vocabulary", "negative-alpha", "bad-source"],
)
def test_cached_beam_search_validates_like_beam_search(kwargs, words):
    _, cached, module, src = decoding_models(0, max_len=10)
    settings = dict(max_len=5) | kwargs
    src = src + settings.pop("src_offset", 0)
    with pytest.raises(ValueError, match=words):
        module.cached_beam_search(cached, src, bos_id=tf.BOS, eos_id=tf.EOS, **settings)


def test_cached_beam_search_restores_training_mode():
    _, cached, module, src = decoding_models(0)
    cached.train()
    module.cached_beam_search(cached, src, 3, tf.BOS, tf.EOS)
    assert cached.training, "cached_beam_search left the model in eval mode"


@pytest.mark.parametrize("beam", [1, 4], ids=["greedy", "beam4"])
def test_translate_decodes_with_stage_14s_cache(beam):
    """translation/decoding.py loads the stage's decoders (one source, not a copy): transformer.py's answers, one
    token a step, each sentence capped by its own length."""
    from translation import decoding
    from translation.batches import BOS_ID, EOS_ID

    ours, _, _, src = decoding_models(4)
    query_lengths = []
    ours.decoder.layers[0].self_attn.w_q.register_forward_hook(lambda _m, a, _o: query_lengths.append(a[0].size(1)))
    out = decoding.decode_batch(ours, src, beam, 0.6)
    assert set(query_lengths) == {1}, (
        f"decoding.decode_batch fed the decoder {sorted(set(query_lengths))} tokens a step: not stage 14's cache"
    )
    max_len = (2 * (src != 0).sum(dim=1) + 10).clamp(max=ours.config.max_len - 1)  # (B,): each its own cap
    if beam == 1:
        expected = tf.greedy_decode(ours, src, max_len, BOS_ID, EOS_ID)
    else:
        expected = tf.beam_search(ours, src, max_len, BOS_ID, EOS_ID, beam, 0.6)
    assert torch.equal(out, expected), "decoding.decode_batch wrote other tokens than transformer.py's decoders"


def test_a_stage_may_declare_a_whole_class_changed_and_sync_keeps_its_docstring():
    """Stage 15 declares classes (AddAndNorm, Encoder, Decoder): their docstrings and methods are its own, and a
    change to one of them in transformer.py stays the stage's, while a change elsewhere is carried over."""
    reference = (ROOT / "transformer.py").read_text(encoding="utf-8")
    bonus = get_stage(15).path.read_text(encoding="utf-8")
    docstring = '    """§3.1: a stack of N identical encoder layers."""'
    assert reference.count(docstring) == 1, "test setup: Encoder's docstring changed; update this test"
    edited = reference.replace(docstring, docstring.replace("identical", "same"))
    assert check_in_step(15, edited, bonus) == [], "a change inside a declared class is the stage's own"
    assert rebuild(15, edited, bonus) == bonus, "sync must keep the stage's own version of a declared class"
    line = "            x = layer(x, src_mask)  # (B, S, D) -> (B, S, D)"
    with_loop_edit = bonus.replace(line, line.replace("(B, S, D) ->", "(B, S, D) ->  "))
    problems = check_in_step(15, reference, with_loop_edit)
    assert problems == [], f"an edit inside a declared class is never drift: {problems}"
    edited = reference.replace("def padding_mask(tokens", "def padding_mask(  tokens")
    problems = check_in_step(15, edited, bonus)
    assert len(problems) == 1 and "`padding_mask`" in problems[0], problems
    assert "def padding_mask(  tokens" in rebuild(15, edited, bonus), "sync must carry a change outside it over"
