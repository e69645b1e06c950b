"""One BPE vocabulary for source and target (§5.1), and batches of its pieces by length under a token budget (§5.1).

train_tokenizer(texts, vocab_size)    a shared BPE learnt by HF tokenizers (fast, keeps Unicode, saves as JSON)
make_examples(tokenizer, pairs, ...)  sentence pairs -> token ids: source pieces and EOS; BOS, target, EOS
length_batches(examples, ...)         the batches of one epoch, sorted by length within pools
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"  # ids 0, 1, 2, 3: PAD is the model's pad_id = 0
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# Batches' worth of sentences sorted by length together. The numbers task wants small pools: a number's length says
# which number it is, and batches of one length taught it worse (README). Real sentences do not: on Multi30k pools of
# 64 batches leave 10.6% of a batch padding where pools of 8 leave 20.4%.
POOL, POOL_NUMBERS = 64, 8


PRE_TOKENIZERS = ("punctuation", "spaces")


def train_tokenizer(texts: list[str], vocab_size: int, split: str = "punctuation"):
    """BPE over the training split only. Source and target share it, which lets the model share one embedding
    matrix between encoder, decoder and output (§3.4). Characters never seen in training become <unk>.

    split="spaces" cuts the text into words at spaces only, so "Hut," and "Hut" are two words to learn;
    "punctuation" also cuts every punctuation mark off into a piece of its own. Either way nothing is dropped, so
    decoding gives back the text exactly."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFC()  # one code point for "ü" whether it arrived composed or not
    words = pre_tokenizers.Metaspace()  # words keep their leading space as "▁"
    if split == "punctuation":
        words = pre_tokenizers.Sequence([words, pre_tokenizers.Punctuation(behavior="isolated")])
    tokenizer.pre_tokenizer = words
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def tokenizer_from_json(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def even_sample(items: list, k: int) -> list:
    """k items spread evenly over the whole list, first to last (all of them when k >= len(items))."""
    n = len(items)
    if k >= n:
        return list(items)
    return [items[i * n // k] for i in range(k)]


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts)]


def decode(tokenizer, ids: Tensor) -> str:
    """Token ids of one answer, BOS first, up to EOS -> text."""
    kept = []
    for token in ids.tolist()[1:]:
        if token == EOS_ID:
            break
        kept.append(token)
    return tokenizer.decode(kept)


@dataclass
class Example:
    src: list[int]  # source pieces, then EOS
    tgt: list[int]  # BOS, target pieces, EOS


def make_examples(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> tuple[list[Example], int]:
    """Encode pairs; drop those that do not fit the model's max_len. Returns the examples and how many were dropped."""
    sources = encode(tokenizer, [s for s, _ in pairs])
    targets = encode(tokenizer, [t for _, t in pairs])
    examples = [Example(s + [EOS_ID], [BOS_ID, *t, EOS_ID]) for s, t in zip(sources, targets, strict=True)]
    kept = [e for e in examples if len(e.src) <= max_len and len(e.tgt) <= max_len]
    return kept, len(examples) - len(kept)


def unknown_share(examples: list[Example]) -> float:
    """The fraction of the pieces that are <unk>: characters the vocabulary never saw, which the model cannot
    write."""
    pieces, unknown = 0, 0
    for e in examples:
        for ids in (e.src, e.tgt):
            pieces += len(ids)
            unknown += ids.count(UNK_ID)
    return unknown / max(pieces, 1)


def length_batches(
    examples: list[Example], batch_tokens: int, seed: int, epoch: int, min_rows: int = 1, pool: int = POOL
):
    """§5.1: "sentence pairs were batched together by approximate sequence length". Shuffle, then sort each pool of
    about `pool` batches' worth of sentences by length and cut it into batches whose padded size rows x max(S, T)
    stays within batch_tokens; shuffle the batches. Sorting the whole corpus at once would waste the least padding,
    but then every batch holds one kind of sentence (on the numbers task: all six-digit numbers, or all one-digit
    ones), and the model learns much worse from such one-sided steps. The same (seed, epoch) always gives the same
    batches, which is what makes resuming exact."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    mean = sum(max(len(e.src), len(e.tgt)) for e in examples) / len(examples)
    per_pool = max(1, int(pool * batch_tokens / mean))
    batches = []
    for start in range(0, len(order), per_pool):
        chunk = sorted(order[start : start + per_pool], key=lambda i: (len(examples[i].src), len(examples[i].tgt)))
        current, width = [], 0
        for i in chunk:
            wider = max(width, len(examples[i].src), len(examples[i].tgt))
            if current and len(current) >= min_rows and wider * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current, wider = [], max(len(examples[i].src), len(examples[i].tgt))
            current.append(i)
            width = wider
        if len(current) < min_rows and batches:
            batches[-1].extend(current)  # too few to give every process a sentence: join the batch before
        elif current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def pad(rows: list[list[int]]) -> Tensor:
    """Token id lists, padded to the longest: (B, L)."""
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)  # (B, L)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def collate(examples: list[Example], device: torch.device) -> tuple[Tensor, Tensor]:
    """Pad to the longest of the batch: src (B, S), tgt (B, T)."""
    return pad([e.src for e in examples]).to(device), pad([e.tgt for e in examples]).to(device)


def padding_share(src: Tensor, tgt: Tensor) -> float:
    """The fraction of a batch's positions that hold padding: what batching by length keeps low."""
    return ((src == PAD_ID).sum() + (tgt == PAD_ID).sum()).item() / (src.numel() + tgt.numel())
