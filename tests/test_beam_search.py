"""Beam search (§6.1): it is greedy decoding at beam 1 and alpha 0 (and at alpha > 0 scores at least as well), it
ranks by log-probability over the length penalty of Wu et al. (2016), it is exhaustive when the beam holds every
hypothesis, an answer that ends early with a low score does not decide a sentence, and padding in a batch changes
nothing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.test_model import SRC, make_model

BOS, EOS, PAD = 1, 2, 0


def teacher_forced_score(tf, model, src_row, hyp, alpha, eos=EOS):
    """log P(hyp | src) by one forward pass, over ((5 + |Y|) / 6)^alpha; hyp starts with BOS, |Y| counts
    the tokens after it up to and including the first eos (the rest is padding)."""
    body = hyp[1:].tolist()
    if eos in body:
        body = body[: body.index(eos) + 1]
    y = torch.tensor([[BOS, *body]])
    log_p = decoder_log_probs(tf, model, src_row, y[:, :-1])[0]  # (|Y|, V)
    total = log_p.gather(1, y[0, 1:, None]).sum().item()
    return total / ((5 + len(body)) / 6) ** alpha


def decoder_log_probs(tf, model, src_row, prefix):
    """log P of every next token after each position of prefix (1, t), masked as decoding masks it: the
    future hidden, the prefix not (a decoder that writes padding reads it back, as greedy_decode does)."""
    causal = tf.subsequent_mask(prefix.size(1))  # (1, 1, t, t)
    return model(src_row[None], prefix, tgt_mask=causal).log_softmax(-1)  # (1, t, V)


def strip(row, eos=EOS):
    """The tokens up to the first eos, so answers of different widths compare."""
    row = row.tolist()
    return row[: row.index(eos) + 1] if eos in row[1:] else row


def trimmed(row, eos=EOS):
    """The tokens up to the first eos, or, for an answer cut off at its max_len, without the padding after it."""
    tokens = strip(row, eos)
    while tokens[-1] == PAD:
        tokens.pop()
    return tokens


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
def test_beam_of_one_at_alpha_0_is_greedy_decoding(tf, seed):
    model, src = long_talker(tf, seed), sources(seed=seed)
    greedy = tf.greedy_decode(model, src, max_len=12, bos_id=BOS, eos_id=EOS)
    beam = tf.beam_search(model, src, max_len=12, bos_id=BOS, eos_id=EOS, beam_size=1, alpha=0.0)
    assert torch.equal(beam, greedy), (
        "beam search with one hypothesis and alpha 0 must be greedy decoding, token for token"
    )


def ender(tf, seed, src):
    """A random model with its output layer untied from the embedding, so that it does not just repeat its last
    token, and an end token that its greedy answers to src first write at the most different steps."""
    model = make_model(tf, seed=seed)
    V, D = model.config.tgt_vocab_size, model.config.d_model
    weight = torch.randn(V, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (V, D)
    model.generator.weight = torch.nn.Parameter(weight)
    free = tf.greedy_decode(model, src, max_len=12, bos_id=BOS)  # (B, 13), no end token

    def first_steps(token):
        return {row.tolist().index(token) if token in row.tolist() else None for row in free[:, 1:]}

    return model, max(range(3, V), key=lambda token: (len(first_steps(token)), -token))


@pytest.mark.stage(12)
@pytest.mark.parametrize("seed", [3, 5])
def test_beam_of_one_at_alpha_0_is_greedy_decoding_when_answers_end_at_different_steps(tf, seed):
    src = sources(seed=seed)
    model, eos = ender(tf, seed, src)
    greedy = tf.greedy_decode(model, src, max_len=12, bos_id=BOS, eos_id=eos)
    ends = {row.tolist()[1:].index(eos) if eos in row.tolist()[1:] else None for row in greedy}
    assert len(ends) >= 3, f"test setup: the answers should end at several different steps, {ends}"
    beam = tf.beam_search(model, src, max_len=12, bos_id=BOS, eos_id=eos, beam_size=1, alpha=0.0)
    assert torch.equal(beam, greedy), (
        f"beam search with one hypothesis and alpha 0 wrote\n{beam}\ninstead of greedy decoding's\n{greedy}\n"
        f"(end token {eos}): its one hypothesis must finish only when it is the best candidate, and then, with no "
        "length penalty, no longer one can beat it"
    )


@pytest.mark.stage(12)
@pytest.mark.parametrize("alpha", [0.6, 2.0], ids=lambda a: f"alpha={a}")
@pytest.mark.parametrize("seed", [3, 5])
def test_beam_of_one_at_alpha_above_0_scores_at_least_as_well_as_greedy_decoding(tf, seed, alpha):
    # With alpha > 0 a longer answer divides its log P by a larger lp: after greedy's answer ends, the one live
    # hypothesis (greedy's, without the end token) may go on to an answer with a better log P / lp.
    src = sources(seed=seed)
    model, eos = ender(tf, seed, src)
    greedy = tf.greedy_decode(model, src, max_len=12, bos_id=BOS, eos_id=eos)
    beam, scores = tf.beam_search(
        model, src, max_len=12, bos_id=BOS, eos_id=eos, beam_size=1, alpha=alpha, return_scores=True
    )
    went_on = 0
    for i in range(src.size(0)):
        ours, theirs = trimmed(beam[i], eos), trimmed(greedy[i], eos)
        greedy_score = teacher_forced_score(tf, model, src[i], greedy[i], alpha, eos)
        assert scores[i].item() >= greedy_score - 1e-9, (
            f"sentence {i}, alpha {alpha}: beam 1 answered {ours} scoring {scores[i].item():.4f}, below greedy's "
            f"{theirs} at {greedy_score:.4f}: greedy's answer is among the hypotheses beam 1 finishes"
        )
        if ours != theirs:
            went_on += 1
            assert ours[: len(theirs) - 1] == theirs[:-1] and len(ours) > len(theirs), (
                f"sentence {i}: beam 1 answered {ours}, greedy {theirs}: beam 1 must follow greedy's tokens until "
                "greedy's answer ends, and may only go on past it"
            )
    if alpha == 2.0:
        assert went_on, "test setup: at alpha 2 some answer should go on past greedy's end"


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
    """Beam search written plainly, one sentence, Python lists, no early stop. K = beam_size live hypotheses
    (tokens, log P); each step extends every one by every token. Of these candidates, those among the best K
    that end in EOS finish, and the best K that do not end live on. The search runs to max_len, where the live
    ones are cut off and count as answers too; the answer is the best of all by log P / lp, |Y| counting the
    tokens after BOS (the first on a tie)."""
    live, answers = [((BOS,), 0.0)], []
    for t in range(1, max_len + 1):
        candidates = []
        for tokens, log_p in live:
            next_log_p = decoder_log_probs(tf, model, src_row, torch.tensor([tokens]))[0, -1]  # (V,)
            candidates += [(tokens + (token,), log_p + extra) for token, extra in enumerate(next_log_p.tolist())]
        candidates.sort(key=lambda c: c[1], reverse=True)  # all have t tokens: log P ranks them as log P / lp
        finished = [c for c in candidates[:beam_size] if c[0][-1] == EOS]
        live = [c for c in candidates if c[0][-1] != EOS][:beam_size]
        answers += finished + (live if t == max_len else [])
    tokens, _ = max(answers, key=lambda a: a[1] / ((5 + len(a[0]) - 1) / 6) ** alpha)
    return list(tokens)


@pytest.mark.stage(12)
@pytest.mark.parametrize("caps", ["one", "each"], ids=["one-max_len", "a-max_len-each"])
@pytest.mark.parametrize("seed", [1, 13])
def test_stopping_early_never_changes_the_answer(tf, seed, caps):
    # The reference runs every step; ours stops a sentence once no live hypothesis can overtake its best answer.
    # alpha = 2 favours long answers, so a hypothesis that is behind when the first one finishes can still win
    # (these seeds have such sentences: deciding a sentence once K hypotheses have finished gets them wrong, and so
    # does a bound computed with lp(t) instead of lp(max_len), or in a batch with the lp of the shortest max_len).
    model, src = make_model(tf, seed=seed), sources(n=4, seed=seed)
    lengths = (src != PAD).sum(dim=1)  # (4,): 7, 4, 2, 6
    max_len = torch.full_like(lengths, 8) if caps == "one" else lengths + 1  # (4,): 8 each, or 8, 5, 3, 7
    settings = dict(bos_id=BOS, eos_id=EOS, beam_size=3, alpha=2.0)
    batch = tf.beam_search(model, src, 8 if caps == "one" else max_len, **settings)
    for i in range(src.size(0)):
        cap = int(max_len[i])
        expected = trimmed(torch.tensor(reference_beam_search(tf, model, src[i], cap, 3, alpha=2.0)))
        alone = tf.beam_search(model, src[i : i + 1, : int(lengths[i])], cap, **settings)
        for how, got in (("alone", trimmed(alone[0])), ("in the batch", trimmed(batch[i]))):
            assert got == expected, (
                f"sentence {i} {how}, max_len {cap}: ours {got}, a plain beam search that keeps 3 live hypotheses "
                f"and runs to max_len {expected}: the search stopped before a live hypothesis could overtake the "
                "best answer, or it did not keep K live hypotheses as others finished"
            )


class NextTokenTable(torch.nn.Module):
    """Stands in for the output layer of a model whose decoder hands it the whole prefix: the probabilities of the
    next token are read from a table {prefix: {token: probability}}, what is left is shared by the other tokens,
    and a prefix not in the table ends with probability 0.9."""

    def __init__(self, table, vocab_size):
        super().__init__()
        self.table, self.vocab_size = table, vocab_size

    def forward(self, prefix):  # (N, t) -> (N, V): log-probabilities
        rows = []
        for tokens in prefix.long().tolist():
            given = self.table.get(tuple(tokens), {EOS: 0.9})
            rest = (1.0 - sum(given.values())) / (self.vocab_size - len(given))
            rows.append([math.log(given.get(token, rest)) for token in range(self.vocab_size)])
        return torch.tensor(rows, dtype=torch.float64)


def table_model(tf, table):
    """A model whose answers and their probabilities are written out by hand: its decoder passes the prefix on at
    every position, and NextTokenTable turns it into the next token's log-probabilities."""
    model = make_model(tf)
    model.decode = lambda tgt, memory, src_mask, tgt_mask: tgt.double()[:, None, :].expand(-1, tgt.size(1), -1)
    model.generator = NextTokenTable(table, model.config.tgt_vocab_size)
    return model


# The right answer is 3 5 EOS (P = 0.55 * 0.85 * 0.95 = 0.44), and greedy decoding finds it. Beside it, two answers
# that end early with a low score are among the best 2 (and 3) candidates: EOS at step 1 (P = 0.35), and 4 EOS at
# step 2 (P = 0.09 * 0.9 = 0.08), when 3 5 is still live (P = 0.47) and can still beat both.
EARLY_ENDS = {
    (BOS,): {3: 0.55, EOS: 0.35, 4: 0.09},
    (BOS, 3): {5: 0.85, EOS: 0.1},
    (BOS, 4): {EOS: 0.9},
    (BOS, 3, 5): {EOS: 0.95},
}


@pytest.mark.stage(12)
@pytest.mark.parametrize("alpha", [0.0, 0.6], ids=lambda a: f"alpha={a}")
@pytest.mark.parametrize("beam", [2, 3], ids=lambda k: f"beam{k}")
def test_answers_that_end_early_with_a_low_score_do_not_decide_the_sentence(tf, beam, alpha):
    model, src = table_model(tf, EARLY_ENDS), SRC[:1]
    right = [BOS, 3, 5, EOS]
    greedy = tf.greedy_decode(model, src, max_len=6, bos_id=BOS, eos_id=EOS)
    assert trimmed(greedy[0]) == right, f"test setup: greedy decoding should answer {right}, got {greedy[0].tolist()}"
    out = tf.beam_search(model, src, max_len=6, bos_id=BOS, eos_id=EOS, beam_size=beam, alpha=alpha)
    assert trimmed(out[0]) == right, (
        f"beam {beam} answered {trimmed(out[0])} where greedy decoding finds {right}, which scores better: the "
        f"sentence was decided once {beam} hypotheses had finished, while a live one could still beat them all"
    )


# The best candidate at step 1 ends: EOS (P = 0.5). At alpha 2 the answer 3 EOS (P = 0.45 * 0.95 = 0.43) scores
# better, log P / lp = -0.62 against -0.69, though it ends a step later; greedy decoding answers EOS.
LATE_WIN = {(BOS,): {EOS: 0.5, 3: 0.45}, (BOS, 3): {EOS: 0.95}}


@pytest.mark.stage(12)
@pytest.mark.parametrize("beam", [1, 2], ids=lambda k: f"beam{k}")
def test_a_longer_answer_can_still_win_after_the_best_candidate_ends(tf, beam):
    model, src = table_model(tf, LATE_WIN), SRC[:1]
    out, score = tf.beam_search(model, src, 6, bos_id=BOS, eos_id=EOS, beam_size=beam, alpha=2.0, return_scores=True)
    right = [BOS, 3, EOS]
    assert trimmed(out[0]) == right, (
        f"beam {beam} at alpha 2 answered {trimmed(out[0])} (log P / lp = {score[0].item():.3f}), but {right} "
        "scores -0.62: the sentence was decided when its best candidate ended, or by a bound s / lp(t) that forgets a "
        "live hypothesis may still grow its lp up to lp(max_len)"
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


# -- a max_len per sentence -----------------------------------------------------------------------------------


def looping_model(tf, seed):
    """A random model that never writes EOS (its output layer gets a bias of -100 there, and on padding), so
    every answer runs to its max_len, as the answers of a model that has not learnt to stop loop until cut off."""
    model = make_model(tf, seed=seed)
    generator = torch.nn.Linear(model.config.d_model, model.config.tgt_vocab_size).double()
    with torch.no_grad():
        generator.weight = model.generator.weight  # still tied to the embedding
        generator.bias.zero_()
        generator.bias[[EOS, PAD]] = -100.0
    model.generator = generator
    return model


def short_beside_long(seed):
    """A source of 2 tokens beside one of 14, and each one's own max_len, 2 * length + 10 within the model's 32
    positions: 14 and 31. One cap for the batch, from its padded width, would give the short one 31 too."""
    src = torch.randint(3, 11, (2, 14), generator=torch.Generator().manual_seed(seed))  # (2, S)
    src[0, 2:] = PAD
    lengths = (src != PAD).sum(dim=1)  # (2,)
    return src, (2 * lengths + 10).clamp(max=31)  # (2,)


def decoder(tf, beam):
    if beam == 1:
        return lambda model, src, max_len: tf.greedy_decode(model, src, max_len, bos_id=BOS, eos_id=EOS)
    return lambda model, src, max_len: tf.beam_search(model, src, max_len, bos_id=BOS, eos_id=EOS, beam_size=beam)


@pytest.mark.stage(12)
@pytest.mark.parametrize("beam", [1, 3], ids=["greedy", "beam3"])
def test_with_its_own_max_len_a_looping_answer_is_the_same_beside_a_much_longer_sentence(tf, beam):
    model, (src, max_len) = looping_model(tf, 6), short_beside_long(seed=6)
    decode = decoder(tf, beam)
    batch = decode(model, src, max_len)
    written = [len(trimmed(row)) - 1 for row in batch]
    assert written == max_len.tolist(), (
        f"the answers wrote {written} tokens: a model that never writes EOS must be cut off at each sentence's own "
        f"max_len, {max_len.tolist()}"
    )
    for i in range(2):
        length = int((src[i] != PAD).sum())
        alone = decode(model, src[i : i + 1, :length], int(max_len[i]))
        assert trimmed(alone[0]) == trimmed(batch[i]), (
            f"sentence {i} with max_len {int(max_len[i])}: alone {trimmed(alone[0])}, beside a sentence of another "
            f"length {trimmed(batch[i])}: a max_len per sentence must cut each answer off at its own"
        )
    shared = decode(model, src, int(max_len.max()))
    assert len(trimmed(shared[0])) > len(trimmed(batch[0])), "test setup: one max_len for the batch should change one"


@pytest.mark.stage(12)
@pytest.mark.parametrize("beam", [1, 3], ids=["greedy", "beam3"])
def test_an_int_max_len_is_the_same_cap_for_every_sentence(tf, beam):
    model, src = long_talker(tf, 7), sources(seed=7)
    decode = decoder(tf, beam)
    one = decode(model, src, 9)
    each = decode(model, src, torch.full((src.size(0),), 9))
    assert torch.equal(one, each), f"max_len=9 and a tensor of 9s decode differently:\n{one}\nvs\n{each}"


@pytest.mark.stage(12)
@pytest.mark.parametrize(
    "max_len, words",
    [
        (torch.tensor([5]), r"one integer per sentence, shape \(2,\)"),
        (torch.tensor([5.0, 5.0]), "one integer per sentence"),
        (torch.tensor([5, 0]), "max_len must be a positive integer, got 0"),
        (torch.tensor([5, 40]), "exceed the model's max_len=32"),
    ],
    ids=["wrong-shape", "floats", "zero", "too-long"],
)
def test_decoding_rejects_a_bad_max_len_per_sentence(tf, max_len, words):
    model = make_model(tf)
    for decode in (decoder(tf, 1), decoder(tf, 3)):
        with pytest.raises(ValueError, match=words):
            decode(model, SRC, max_len)
