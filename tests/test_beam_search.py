"""Beam search (§6.1): it is greedy decoding at beam 1, it ranks by log-probability over the length penalty
of Wu et al. (2016), it is exhaustive when the beam holds every hypothesis, and padding in a batch changes nothing."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.test_model import SRC, make_model

BOS, EOS, PAD = 1, 2, 0


def teacher_forced_score(tf, model, src_row, hyp, alpha):
    """log P(hyp | src) by one forward pass, over ((5 + |Y|) / 6)^alpha; hyp starts with BOS, |Y| counts
    the tokens after it up to and including the first EOS (the rest is padding)."""
    body = hyp[1:].tolist()
    if EOS in body:
        body = body[: body.index(EOS) + 1]
    y = torch.tensor([[BOS, *body]])
    log_p = decoder_log_probs(tf, model, src_row, y[:, :-1])[0]  # (|Y|, V)
    total = log_p.gather(1, y[0, 1:, None]).sum().item()
    return total / ((5 + len(body)) / 6) ** alpha


def decoder_log_probs(tf, model, src_row, prefix):
    """log P of every next token after each position of prefix (1, t), masked as decoding masks it: the
    future hidden, the prefix not (a decoder that writes padding reads it back, as greedy_decode does)."""
    causal = tf.subsequent_mask(prefix.size(1))  # (1, 1, t, t)
    return model(src_row[None], prefix, tgt_mask=causal).log_softmax(-1)  # (1, t, V)


def strip(row):
    """The tokens up to the first EOS, so answers of different widths compare."""
    row = row.tolist()
    return row[: row.index(EOS) + 1] if EOS in row[1:] else row


def sources(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 11, (n, 7), generator=generator)  # (n, S)
    for i, length in enumerate([7, 4, 2, 6, 5, 3][:n]):
        src[i, length:] = PAD
    return src


def long_talker(tf, seed):
    """A random model made to write EOS rarely (its embedding shrunk), so answers have many lengths."""
    model = make_model(tf, seed=seed)
    with torch.no_grad():
        model.tgt_embed.weight[EOS] *= 0.3
    return model


@pytest.mark.stage(12)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy_decoding(tf, seed):
    model, src = long_talker(tf, seed), sources(seed=seed)
    greedy = tf.greedy_decode(model, src, max_len=12, bos_id=BOS, eos_id=EOS)
    beam = tf.beam_search(model, src, max_len=12, bos_id=BOS, eos_id=EOS, beam_size=1)
    assert torch.equal(beam, greedy), "beam search with one hypothesis must be greedy decoding, token for token"


@pytest.mark.stage(12)
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0], ids=lambda a: f"alpha={a}")
def test_the_returned_score_is_the_models_log_probability_over_the_length_penalty(tf, alpha):
    model, src = long_talker(tf, 3), sources()
    out, scores = tf.beam_search(
        model, src, max_len=10, bos_id=BOS, eos_id=EOS, beam_size=4, alpha=alpha, return_scores=True
    )
    assert out.dim() == 2 and (out[:, 0] == BOS).all() and out.size(1) <= 11
    for i in range(src.size(0)):
        expected = teacher_forced_score(tf, model, src[i], out[i], alpha)
        assert abs(scores[i].item() - expected) <= 1e-9, (
            f"sentence {i}: beam search scored its answer {scores[i].item():.6f}, but the model gives it "
            f"log P / lp = {expected:.6f}: the score or the length penalty ((5 + |Y|) / 6)^alpha is wrong"
        )
    after_eos = [row[row.tolist().index(EOS) + 1 :] for row in out if EOS in row.tolist()]
    assert all((rest == PAD).all() for rest in after_eos), "after EOS an answer must hold padding"


@pytest.mark.stage(12)
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0], ids=lambda a: f"alpha={a}")
def test_a_beam_as_wide_as_the_vocabulary_finds_the_best_answer_of_two_tokens(tf, alpha):
    # max_len 2 and beam V: after the first token the beam holds every one-token prefix, so the search is
    # exhaustive and must return the argmax of log P / lp over every answer of one (EOS) or two tokens
    model, src = long_talker(tf, 4), sources(n=3, seed=4)
    V = model.config.tgt_vocab_size
    out = tf.beam_search(model, src, max_len=2, bos_id=BOS, eos_id=EOS, beam_size=V, alpha=alpha)
    for i in range(src.size(0)):
        answers = [(BOS, EOS)] + [(BOS, a, b) for a, b in itertools.product(range(V), repeat=2) if a != EOS]
        scored = {y: teacher_forced_score(tf, model, src[i], torch.tensor(y), alpha) for y in answers}
        best = max(scored, key=scored.get)
        got = tuple(strip(out[i]))
        assert scored[got] >= scored[best] - 1e-9, (
            f"sentence {i}: beam search returned {got} (score {scored[got]:.4f}), but {best} scores "
            f"{scored[best]:.4f}: the search ranks hypotheses of different lengths wrongly"
        )


def reference_beam_search(tf, model, src_row, max_len, beam_size, alpha):
    """Beam search written plainly, one sentence, Python lists, every step to max_len (no early stop):
    hypotheses are (tokens, log P, finished); a finished one only extends by padding, at no cost."""
    beams = [((BOS,), 0.0, False)]
    for _ in range(max_len):
        candidates = []
        for tokens, log_p, done in beams:
            if done:
                candidates.append((tokens + (PAD,), log_p, True))
                continue
            next_log_p = decoder_log_probs(tf, model, src_row, torch.tensor([tokens]))[0, -1]  # (V,)
            for token, extra in enumerate(next_log_p.tolist()):
                candidates.append((tokens + (token,), log_p + extra, token == EOS))

        def ranked(hypothesis):
            tokens, log_p, _ = hypothesis
            written = tokens[1:].index(EOS) + 1 if EOS in tokens[1:] else len(tokens) - 1
            return log_p / ((5 + written) / 6) ** alpha

        beams = sorted(candidates, key=ranked, reverse=True)[:beam_size]
    return list(beams[0][0])


@pytest.mark.stage(12)
@pytest.mark.parametrize("seed", [11, 13])
def test_stopping_early_never_changes_the_answer(tf, seed):
    # The reference runs every step; ours stops once no live hypothesis can overtake the best finished one.
    # alpha = 2 favours long answers, so a hypothesis that is behind when the first one finishes can still win
    # (these seeds have such sentences: stopping when the best hypothesis finishes gets them wrong).
    model, src = make_model(tf, seed=seed), sources(n=4, seed=seed)
    batch = tf.beam_search(model, src, max_len=6, bos_id=BOS, eos_id=EOS, beam_size=3, alpha=2.0)
    for i in range(src.size(0)):
        expected = strip(torch.tensor(reference_beam_search(tf, model, src[i], 6, 3, alpha=2.0)))
        length = int((src[i] != PAD).sum())
        alone = tf.beam_search(
            model, src[i : i + 1, :length], max_len=6, bos_id=BOS, eos_id=EOS, beam_size=3, alpha=2.0
        )
        for how, got in (("alone", strip(alone[0])), ("in the batch", strip(batch[i]))):
            assert got == expected, (
                f"sentence {i} {how}: ours {got}, a beam search run to max_len {expected}: "
                "the search stopped before a live hypothesis could overtake the best finished one"
            )


@pytest.mark.stage(12)
def test_a_sentence_gets_the_same_answer_alone_and_in_a_padded_batch(tf):
    model, src = long_talker(tf, 5), sources(seed=5)
    batch = tf.beam_search(model, src, max_len=10, bos_id=BOS, eos_id=EOS, beam_size=4)
    for i in range(src.size(0)):
        length = int((src[i] != PAD).sum())
        alone = tf.beam_search(model, src[i : i + 1, :length], max_len=10, bos_id=BOS, eos_id=EOS, beam_size=4)
        assert strip(alone[0]) == strip(batch[i]), (
            f"sentence {i} decodes differently alone and inside a padded batch: padding or another sentence leaks in"
        )


@pytest.mark.stage(12)
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(max_len=0), "max_len must be a positive integer"),
        (dict(max_len=40), "exceed the model's max_len=32"),
        (dict(max_len=5, beam_size=0), r"beam_size must be an integer in \[1, 11\]"),
        (dict(max_len=5, beam_size=12), r"beam_size must be an integer in \[1, 11\]"),
        (dict(max_len=5, alpha=-0.5), "alpha must be >= 0"),
    ],
    ids=["max_len-0", "max_len-too-long", "beam-0", "beam-wider-than-vocabulary", "negative-alpha"],
)
def test_beam_search_rejects_bad_settings(tf, kwargs, words):
    model = make_model(tf)
    with pytest.raises(ValueError, match=words):
        tf.beam_search(model, SRC, bos_id=BOS, eos_id=EOS, **kwargs)
