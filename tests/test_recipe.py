"""What translate.py's recipe is made of, against what it replaces or promises: the closed-form label-smoothed loss
against transformer.py's q, the cooldown against Eq. (3), --precision auto on processors with and without native
bfloat16, the even sample the BPE learns from, and pre-tokenization that splits punctuation yet decodes exactly."""

from __future__ import annotations

import pytest
import torch

import transformer as tf
import translate as tr
from translation import batches as tb
from translation import precision as tp


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3], ids=["eps-0", "eps-0.1", "eps-0.3"])
def test_the_closed_form_loss_is_transformer_pys_loss(smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 50, generator=generator, dtype=torch.float64) * 3  # (B, T, V)
    target = torch.randint(1, 50, (4, 7), generator=generator)  # (B, T)
    target[0, 4:] = target[2, 1:] = 0  # padding, which neither counts
    ours = logits.clone().requires_grad_()
    paper = logits.clone().requires_grad_()
    closed = tr.smoothed_loss_sum(ours, target, smoothing, pad_id=0)
    with_q = tf.label_smoothed_loss(paper, target, smoothing, pad_id=0) * (target != 0).sum()
    assert abs(closed.item() - with_q.item()) < 1e-10, f"closed form {closed.item()} but with q {with_q.item()}"
    closed.backward()
    with_q.backward()
    assert torch.allclose(ours.grad, paper.grad, atol=1e-12, rtol=0), "the closed form's gradient differs from q's"
    assert ours.grad[0, 4:].abs().max() == 0, "a padding position got a gradient"


def test_the_closed_form_loss_is_right_by_hand():
    """V = 4, true token 2, pad 0, eps 0.2: q = (0, 0.1, 0.8, 0.1) -> -(0.1 log p1 + 0.8 log p2 + 0.1 log p3)."""
    logits = torch.tensor([[[0.5, -1.0, 2.0, 0.25]]], dtype=torch.float64)
    log_p = logits.log_softmax(-1)[0, 0]
    by_hand = -(0.1 * log_p[1] + 0.8 * log_p[2] + 0.1 * log_p[3])
    assert abs(tr.smoothed_loss_sum(logits, torch.tensor([[2]]), 0.2, 0).item() - by_hand.item()) < 1e-12


def schedule(steps: int, cooldown: float, **config) -> list[float]:
    config = tf.TransformerConfig(10, 10, **({"d_model": 64, "warmup_steps": 40} | config))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = tr.make_scheduler(optimizer, config, steps, cooldown)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_no_cooldown_is_eq_3_and_a_cooldown_falls_linearly_to_zero():
    paper = [tf.learning_rate(i + 1, 64, 40) for i in range(200)]
    assert schedule(200, 0.0) == pytest.approx(paper, rel=1e-12), "cooldown 0 must be the paper's Eq. (3)"
    cooled = schedule(200, 0.25)
    assert cooled[:150] == pytest.approx(paper[:150], rel=1e-12), "before the cooldown the rate is Eq. (3)'s"
    for i in (150, 175, 199):
        assert cooled[i] == pytest.approx(paper[i] * (200 - i) / 50, rel=1e-12), f"step {i} is not on the line"
    assert cooled[-1] < 0.03 * paper[-1], "the last step's rate is not near zero"


def test_lr_factor_scales_the_whole_schedule():
    assert schedule(100, 0.3, lr_factor=2.0) == pytest.approx([2 * r for r in schedule(100, 0.3)], rel=1e-12)


@pytest.mark.parametrize(
    "native, asked, chosen, says",
    [
        (True, "auto", "bf16", "natively"),
        (False, "auto", "fp32", "no native bfloat16"),
        (False, "bf16", "bf16", "expect it slower than fp32"),
        (True, "fp32", "fp32", "as asked"),
    ],
    ids=["auto-native", "auto-emulated", "bf16-emulated-warns", "fp32-stays"],
)
def test_precision_auto_takes_bf16_only_where_it_is_native(native, asked, chosen, says):
    precision, why = tp.choose_precision(asked, torch.device("cpu"), native=lambda device: native)
    assert precision == chosen and says in why, (precision, why)


def test_decoding_on_a_cpu_stays_float32_under_auto():
    assert tp.decoding_precision("auto", torch.device("cpu")) == "fp32"
    assert tp.decoding_precision("bf16", torch.device("cpu")) == "bf16", "what is asked is taken"


def test_training_says_which_precision_it_chose(tmp_path, capsys, monkeypatch):
    from translation import corpora

    splits = corpora.numbers_task(200, 10, 10, seed=0)
    corpora.write_tsv(tmp_path / "t.tsv", splits["train"])
    monkeypatch.setattr(tp, "native_bf16", lambda device: False)
    tiny = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--vocab-size", "100"]
    argv = ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "t.tsv"), *tiny, "--steps", "1"]
    assert tr.main([*argv, "--eval-every", "0", "--threads", "1"]) == 0
    assert "precision fp32: this cpu has no native bfloat16" in capsys.readouterr().out
    meta, _ = tr.load_checkpoint(tr.checkpoints(tmp_path / "run")[-1])
    assert meta["precision"] == "fp32", "the checkpoint keeps the precision chosen, not 'auto'"


@pytest.mark.parametrize("n, k", [(29_000, 20_000), (10, 3), (7, 7), (5, 9)])
def test_the_bpe_sample_spreads_over_the_whole_list(n, k):
    items = list(range(n))
    sample = tb.even_sample(items, k)
    assert len(sample) == min(n, k) and len(set(sample)) == len(sample), "a sample of k distinct items"
    if k < n:
        assert sample[0] == 0 and sample[-1] >= n - n // k - 1, f"the sample stops at {sample[-1]} of {n}"


SENTENCES = [
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    'Zwei Hunde spielen im "Schnee" - oder im Sand?',
    "Die Frau (links) trägt z.B. ein T-Shirt; der Mann: nichts!",
    "Um 10:30 Uhr kostet es 3,50 € – sagt er … ",
    "A man's hat, isn't it?  Two  spaces, then 1,000 birds.",
    "Ä Ö Ü ß é – „Anführungszeichen“ und ‚halbe‘.",
]


@pytest.mark.parametrize("split", tb.PRE_TOKENIZERS)
def test_pre_tokenizers_decode_back_to_the_text_exactly(split):
    tokenizer = tb.train_tokenizer(SENTENCES * 3, 200, split)
    for text in SENTENCES:
        ids = tokenizer.encode(text).ids
        assert tb.UNK_ID not in ids, f"{text!r} lost characters to <unk>"
        expected = text  # every character back, spaces included
        assert tokenizer.decode(ids) == expected, f"{split}: {text!r} came back as {tokenizer.decode(ids)!r}"


def test_punctuation_becomes_pieces_of_its_own():
    tokenizer = tb.train_tokenizer(["Ein Hut, ein Hund. Ein Hut!"] * 20, 60, "punctuation")
    pieces = tokenizer.encode("Ein Hut, ein Hund.").tokens
    assert "," in pieces and "." in pieces and not any(p.endswith((",", ".")) and len(p) > 1 for p in pieces), pieces
    spaces = tb.train_tokenizer(["Ein Hut, ein Hund. Ein Hut!"] * 20, 60, "spaces")
    assert any(p.endswith(",") and len(p) > 1 for p in spaces.encode("Ein Hut, ein Hund.").tokens), "spaces only"


def test_the_share_of_unknown_pieces_is_counted():
    examples = [tb.Example([5, tb.UNK_ID, tb.EOS_ID], [tb.BOS_ID, 6, tb.EOS_ID])]
    assert tb.unknown_share(examples) == pytest.approx(1 / 6)
