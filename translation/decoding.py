"""Decoding whole files, and scoring them: greedy decoding and beam search with a key/value cache (bonus stage 14),
BLEU and chrF by sacreBLEU with their signatures, and the cross-attention of one translation drawn as a picture."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from stages.manifest import get_stage
from translation.batches import BOS_ID, EOS_ID, PAD_ID, decode, encode, pad


def source_ids(tokenizer, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Each text's pieces and EOS, cut to max_len tokens; and how many had to be cut."""
    ids = [s + [EOS_ID] for s in encode(tokenizer, texts)]
    cut = sum(len(s) > max_len for s in ids)
    return [s[: max_len - 1] + [EOS_ID] if len(s) > max_len else s for s in ids], cut


def answer_caps(model, src: Tensor) -> Tensor:
    """Each sentence's own cap on its answer: twice its length plus 10 tokens (an answer rarely runs past twice its
    source), within the model's max_len. Its own length, not the batch's padded width: an answer that runs to its
    cap (a looping one) is then the same alone as beside a longer sentence, in translate and in evaluate alike.
    src (b, S) -> (b,)."""
    lengths = (src != PAD_ID).sum(dim=1)  # (b,)
    return (2 * lengths + 10).clamp(max=model.config.max_len - 1)  # (b,)


def decode_batch(model, src: Tensor, beam: int, alpha: float) -> Tensor:
    """src (b, S) -> answers (b, <= max_len + 1): greedy at beam 1, beam search above.

    Both come from bonus stage 14, the file that holds them (stages/bonus/14_kv_cache.py): transformer.py's
    greedy_decode and beam_search, token for token (tests/test_bonus.py), with a key/value cache, and a sentence
    leaves the batch once its answer is decided. transformer.py's own loops re-read every token at every step.
    """
    cached = get_stage(14).load()
    max_len = answer_caps(model, src)  # (b,)
    if beam == 1:
        return cached.cached_greedy_decode(model, src, max_len, BOS_ID, EOS_ID)
    return cached.cached_beam_search(model, src, max_len, BOS_ID, EOS_ID, beam_size=beam, alpha=alpha)


def translate_texts(model, tokenizer, texts: list[str], beam: int, alpha: float, batch_size: int = 100) -> list[str]:
    """Beam search (greedy at beam 1) over sentences sorted by length, so a batch holds little padding. 100 sentences
    a batch decoded Multi30k's test set with the least CPU time of 50, 100, 200 and 400 (beam 4, one thread)."""
    device = next(model.parameters()).device
    ids, _ = source_ids(tokenizer, texts, model.config.max_len)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ys = decode_batch(model, pad([ids[i] for i in chunk]).to(device), beam, alpha)  # (b, <= max_len + 1)
        for row, i in enumerate(chunk):
            out[i] = decode(tokenizer, ys[row].cpu())
    return out


def loops(text: str) -> bool:
    """Does the text say the same one to four words three times in a row ("a dress and a dress and a dress and")?
    Real sentences almost never do; a model that has not learnt when to stop does it until max_len."""
    words = text.split()
    for n in range(1, 5):
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return True
    return False


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF by sacreBLEU (with their signatures, so the numbers can be compared), exact match, and
    how many hypotheses loop."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    # lowercased: what the tutorials report (their BLEU is over lowercased tokens), so it can stand beside theirs
    bleu_lower = sacrebleu.metrics.BLEU(lowercase=True)
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    hits = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    one_word = sum(len(r.split()) <= 1 for r in references)
    return {
        "bleu": b.score,
        "bleu_lowercase": bleu_lower.corpus_score(hypotheses, [references]).score,
        "chrf": c.score,
        "exact": hits,
        "looping": sum(map(loops, hypotheses)),
        "n": len(references),
        "bleu_signature": str(bleu.get_signature()),
        "bleu_lowercase_signature": str(bleu_lower.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        # BLEU counts word 4-grams: on one-word references it is 0 however right the output is
        "bleu_meaningless": one_word > len(references) / 2,
    }


def cross_attention(model, tokenizer, text: str, beam: int, alpha: float) -> tuple[list[str], list[str], Tensor]:
    """The source pieces, the translation's pieces, and the last decoder layer's cross-attention averaged over its
    heads, (T, S), read off one teacher-forced pass over the translation the model wrote."""
    (src_ids,), _ = source_ids(tokenizer, [text], model.config.max_len)
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], device=device)  # (1, S)
    out = decode_batch(model, src, beam, alpha)[0].tolist()
    out = out[: out.index(EOS_ID) + 1] if EOS_ID in out else out
    attention = model.decoder.layers[-1].cross_attn
    attention.keep_weights = True
    try:
        with torch.no_grad():
            model(src, torch.tensor([out[:-1]], device=device))
        weights = attention.last_weights[0].mean(dim=0).cpu()  # (H, T, S) -> (T, S)
    finally:
        attention.keep_weights, attention.last_weights = False, None
    pieces = lambda ids: [tokenizer.id_to_token(i) for i in ids]  # noqa: E731
    return pieces(src_ids), pieces(out[1:]), weights


def plot_alignment(model, tokenizer, text: str, beam: int, alpha: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, target, weights = cross_attention(model, tokenizer, text, beam, alpha)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(source), 1 + 0.45 * len(target)))
    ax.imshow(weights.numpy(), cmap="Blues", vmin=0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right")
    ax.set_yticks(range(len(target)), target)
    ax.set_xlabel("source subwords (keys)")
    ax.set_ylabel("target subwords (queries)")
    ax.set_title("cross-attention, last decoder layer, mean over heads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
