"""Translate for real: train transformer.py's model on parallel text, decode with beam search, score with BLEU.

This file sits beside transformer.py the way a training script sits beside its model: the model, the loss, the
optimiser and the schedule live there, and greedy decoding and beam search with a key/value cache in bonus stage 14
(stages/bonus/14_kv_cache.py); both are imported, never copied. What lives here is what a real
task adds: a shared BPE vocabulary (HF `tokenizers`, §5.1), batches by length under a token budget (§5.1),
checkpoints that survive a kill and load without unpickling anything, averaging them (§6.1), BLEU with sacreBLEU's
signature, and data-parallel training under torchrun. The data (the numbers task, the user's files, Multi30k) comes
from corpora.py.

    python translate.py train --out runs/numbers                      # the built-in German -> English numbers task
    python translate.py train --out runs/mine --data pairs.tsv        # source<TAB>target per line (Tatoeba, ManyThings)
    python translate.py fetch multi30k --out data/multi30k           # Multi30k, checked against pinned SHA-256 sums
    python translate.py train --out runs/m30k --src train.de --tgt train.en   # line-aligned files (Multi30k, WMT)
    python translate.py evaluate runs/numbers [--beam 4] [--alpha 0.6]
    python translate.py translate runs/numbers "dreihundertzweiundvierzig" [--plot alignment.png]
    python translate.py average runs/numbers --last 5 --out runs/numbers/averaged.pt
    torchrun --standalone --nproc-per-node 2 translate.py train --out runs/ddp   # the same command, N processes

Every bad input (a missing file, a line without a tab, bytes that are not UTF-8, a run directory without a
checkpoint, ...) costs one line on stderr and exit status 2, and leaves what is already in the run directory alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor

from corpora import UserError, fetch_multi30k, numbers_task, read_pairs, read_tsv, split_of, write_tsv
from stages.manifest import get_stage
from transformer import (
    OneLineParser,
    Transformer,
    TransformerConfig,
    make_optimizer,
    non_negative_int,
    pick_device,
    positive_int,
)

PROG = "translate.py"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"  # ids 0, 1, 2, 3: PAD is the model's pad_id = 0
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
CHECKPOINT_FORMAT = 1
DEFAULT_BATCH_TOKENS = 600  # of `train`: about 60 numbers
DEFAULT_STEPS = 700  # of `train`: enough for the numbers task on a CPU (see the Makefile's translate)
# Batches' worth of sentences sorted by length together. The numbers task wants small pools: a number's length says
# which number it is, and batches of one length taught it worse (README). Real sentences do not: on Multi30k pools of
# 64 batches leave 10.6% of a batch padding where pools of 8 leave 20.4%.
POOL, POOL_NUMBERS = 64, 8
UNKNOWN_WARNING = 0.001  # a share of <unk> pieces above this gets a warning: 1 piece in 1,000
LEGACY_POOL = 8  # what checkpoints written before --pool existed were batched with
BATCHING = {"batch_tokens": "--batch-tokens", "pool": "--pool"}  # kept by a resume: the batches depend on them


# -----------------------------------------------------------------------------
# One BPE vocabulary for source and target (§5.1), learned by HF tokenizers
# -----------------------------------------------------------------------------


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


def even_sample(items: list, k: int) -> list:
    """k items spread evenly over the whole list, first to last (all of them when k >= len(items))."""
    n = len(items)
    if k >= n:
        return list(items)
    return [items[i * n // k] for i in range(k)]


def unknown_share(examples: list[Example]) -> float:
    """The fraction of the pieces that are <unk>: characters the vocabulary never saw, which the model cannot
    write."""
    pieces, unknown = 0, 0
    for e in examples:
        for ids in (e.src, e.tgt):
            pieces += len(ids)
            unknown += ids.count(UNK_ID)
    return unknown / max(pieces, 1)


def tokenizer_from_json(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


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


# -----------------------------------------------------------------------------
# Batches by length under a token budget (§5.1)
# -----------------------------------------------------------------------------


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


# -----------------------------------------------------------------------------
# Processes: one, or many under torchrun (torch.distributed)
# -----------------------------------------------------------------------------


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def master(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and the progress bar, and evaluates."""
        return self.rank == 0


def device_named(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as error:
        raise UserError(str(error)) from None


COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def start_processes(device_name: str) -> tuple[Processes, torch.device]:
    """torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain `python translate.py` sets none and pays nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes(), device_named(device_name)
    procs = Processes(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device_name == "mps" or (device_name == "cuda" and not torch.cuda.is_available()):
        why = "is not supported" if device_name == "mps" else "finds no GPU here"
        raise UserError(f"torchrun trains on cpu (gloo) or cuda (nccl): --device {device_name} {why}")
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(procs.local_rank)  # one GPU per local rank
        device, backend = torch.device("cuda", procs.local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    # A rank that dies is torchrun's business: its agent sees the exit and stops the others within a second. The
    # timeout is for a rank that hangs: its peers' collectives fail instead of waiting forever. It must outlast the
    # longest stretch rank 0 works alone (validation, a checkpoint), while the others wait at a barrier.
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return procs, device


def all_sum(value: Tensor, procs: Processes) -> Tensor:
    if procs.world > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def agree(procs: Processes, what: str, *parts) -> None:
    """Every rank reads the data, learns the vocabulary and finds the checkpoint to resume from on its own. A rank
    that sees other files (another node whose run directory is not the shared one, say) would otherwise train on
    something else in silence, or wait for steps that never come."""
    if procs.world == 1:
        return
    fingerprint = hashlib.sha256()
    for part in parts:  # a long list (millions of training pairs) goes in chunks, never as one huge string
        items = part if isinstance(part, list) else [part]
        for start in range(0, len(items), 10_000):
            fingerprint.update(json.dumps(items[start : start + 10_000], default=str).encode("utf-8"))
        fingerprint.update(b"\0")
    seen = [None] * procs.world
    dist.all_gather_object(seen, fingerprint.hexdigest())
    odd = [rank for rank, d in enumerate(seen) if d != seen[0]]
    if odd:
        raise UserError(
            f"rank {odd[0]} disagrees with rank 0 on {what}: every node must see the same data and run directory"
        )


# -----------------------------------------------------------------------------
# Checkpoints: atomic, complete, and loaded without unpickling code
# -----------------------------------------------------------------------------


def flatten_state(state: dict, prefix: str = "") -> tuple[dict[str, Tensor], object]:
    """Split a state dict into its tensors (by dotted path) and a JSON-able skeleton that names them."""
    tensors: dict[str, Tensor] = {}

    def walk(value, path):
        if isinstance(value, Tensor):
            tensors[path] = value.detach().cpu()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {
                "__dict__": [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())
                ]
            }
        if isinstance(value, (list, tuple)):
            return {
                "__list__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)],
                "tuple": isinstance(value, tuple),
            }
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path} in a checkpoint")

    return tensors, walk(state, prefix)


def unflatten_state(skeleton, tensors: dict[str, Tensor]):
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        items = [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        return tuple(items) if skeleton["tuple"] else items
    return skeleton


def save_checkpoint(path: Path, meta: dict, states: dict[str, dict]) -> None:
    """One file: a dict of tensors and one JSON string, written to a temporary file and renamed, so a kill during
    the save leaves the previous checkpoint intact and never a half-written latest one."""
    tensors, skeleton = flatten_state(states)
    payload = {"tensors": tensors, "meta": json.dumps(meta | {"format": CHECKPOINT_FORMAT, "states": skeleton})}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX and Windows


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(meta, states). torch.load(weights_only=True) unpickles tensors and plain containers only: a file crafted
    to run code on load is refused before anything runs."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except Exception as error:  # UnpicklingError, a truncated file, a zip that is not torch's, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a translate.py checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or set(payload) != {"tensors", "meta"} or not isinstance(payload["meta"], str):
        raise UserError(f"{path}: not a translate.py checkpoint (it holds no tensors and meta)")
    try:
        meta = json.loads(payload["meta"])
    except json.JSONDecodeError:
        raise UserError(f"{path}: not a translate.py checkpoint (its meta is not JSON)") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: checkpoint format {meta.get('format')!r}, this translate.py reads {CHECKPOINT_FORMAT}"
        )
    return meta, unflatten_state(meta.pop("states"), payload["tensors"])


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoints(run_dir: Path) -> list[Path]:
    """The numbered checkpoints of a run, oldest first."""
    return sorted(checkpoint_dir(run_dir).glob("step-*.pt"))


def resolve_checkpoint(where: str | Path) -> Path:
    """A run directory means its latest checkpoint; a file is taken as it is (an averaged checkpoint, say)."""
    where = Path(where)
    if where.is_file():
        return where
    if not where.is_dir():
        raise UserError(f"{where}: no such run directory or checkpoint file")
    found = checkpoints(where)
    if not found:
        raise UserError(f"{where}: no checkpoint in {checkpoint_dir(where)} (train first: {PROG} train --out {where})")
    return found[-1]


def rebuild_model(meta: dict, states: dict, device: torch.device | str = "cpu") -> Transformer:
    config = TransformerConfig(**meta["config"])
    model = Transformer(config)
    try:
        model.load_state_dict(states["model"])
    except (KeyError, RuntimeError) as error:
        raise UserError(f"the checkpoint's weights do not fit its config: {str(error).splitlines()[0][:160]}") from None
    return model.to(device=device, dtype=getattr(torch, meta.get("dtype", "float32")))


def load_run(where: str | Path, device: torch.device | str = "cpu"):
    """(checkpoint path, its meta, the model in eval mode, the tokenizer), from one read of the checkpoint of a run
    directory (its latest) or of a checkpoint file."""
    path = resolve_checkpoint(where)
    meta, states = load_checkpoint(path)
    return path, meta, rebuild_model(meta, states, device).eval(), tokenizer_from_json(meta["tokenizer"])


def load_model(run_dir: str | Path, device: torch.device | str = "cpu") -> Transformer:
    """The trained Transformer from the latest checkpoint of run_dir (or from a checkpoint file), in eval mode."""
    return load_run(run_dir, device)[2]


def load_tokenizer(run_dir: str | Path):
    """The run's shared BPE tokenizer (a tokenizers.Tokenizer), from the checkpoint that load_model reads."""
    meta, _ = load_checkpoint(resolve_checkpoint(run_dir))
    return tokenizer_from_json(meta["tokenizer"])


# -----------------------------------------------------------------------------
# Decoding and scoring
# -----------------------------------------------------------------------------


def source_ids(tokenizer, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Each text's pieces and EOS, cut to max_len tokens; and how many had to be cut."""
    ids = [s + [EOS_ID] for s in encode(tokenizer, texts)]
    cut = sum(len(s) > max_len for s in ids)
    return [s[: max_len - 1] + [EOS_ID] if len(s) > max_len else s for s in ids], cut


def decode_batch(model, src: Tensor, beam: int, alpha: float) -> Tensor:
    """src (b, S) -> answers (b, <= max_len + 1): greedy at beam 1, beam search above.

    Both come from bonus stage 14, the file that holds them (stages/bonus/14_kv_cache.py): transformer.py's
    greedy_decode and beam_search, token for token (tests/test_bonus.py), with a key/value cache, and a sentence
    leaves the batch once its answer is decided. transformer.py's own loops re-read every token at every step.
    """
    cached = get_stage(14).load()
    max_len = min(model.config.max_len - 1, 2 * src.size(1) + 10)  # an answer rarely runs past twice its source
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


def smoothed_loss_sum(logits: Tensor, target: Tensor, smoothing: float, pad_id: int) -> Tensor:
    """The sum over real target tokens of transformer.py's label_smoothed_loss, without building its q.

    q puts 1 - eps on the true token t and eps / (V - 2) on every token but t and padding, so
    -sum_v q_v log p_v = -(1 - eps) log p_t - eps / (V - 2) (sum_v log p_v - log p_t - log p_pad),
    and log p_v = z_v - logsumexp(z): every term needs one logsumexp and one sum over V per token, not a (B*T, V)
    q and its product with the log-probabilities (tests/test_translate.py holds the two equal in float64).
    logits (B, T, V) in float32 or float64, target (B, T) -> a scalar."""
    V = logits.size(-1)
    z = logits.flatten(0, -2)  # (B, T, V) -> (B*T, V)
    target = target.flatten()  # (B, T) -> (B*T,)
    keep = target != pad_id  # (B*T,)
    z, target = z[keep], target[keep]  # (n, V), (n,): padding positions cost nothing
    lse = z.logsumexp(dim=-1)  # (n,)
    log_p_true = z.gather(1, target[:, None]).squeeze(1) - lse  # (n,)
    log_p_pad = z[:, pad_id] - lse  # (n,)
    sum_log_p = z.sum(dim=-1) - V * lse  # (n,)
    rest = sum_log_p - log_p_true - log_p_pad  # (n,): the V - 2 tokens that share eps
    return -((1.0 - smoothing) * log_p_true + smoothing / (V - 2) * rest).sum()


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Does this device compute bfloat16 natively? CPUs with AVX-512 BF16 or AMX do (recent Xeons, AMD Zen 4 and
    later); others emulate it, and there autocast trains slower than float32 (an Intel Ice Lake: 2.3x slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def choose_precision(asked: str, device: torch.device, native=native_bf16) -> tuple[str, str]:
    """(fp32 or bf16, why): --precision auto takes bf16 only where the device computes it natively."""
    fast = native(device)
    if asked == "auto":
        if fast:
            return "bf16", f"bf16: {device.type} computes bfloat16 natively"
        return "fp32", f"fp32: this {device.type} has no native bfloat16, where autocast would train slower"
    if asked == "bf16" and not fast:
        return "bf16", f"bf16 as asked, but this {device.type} has no native bfloat16: expect it slower than fp32"
    return asked, f"{asked} as asked"


def decoding_precision(asked: str, device: torch.device) -> str:
    """Decoding on a CPU stays float32 under --precision auto: one token at a time, autocast's casts of every weight
    at every step cost more than bfloat16 saves (greedy over test2016 on two cores: 273 s in bf16, 13 s in fp32)."""
    if asked == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    return asked


def autocast(device: torch.device, precision: str):
    """--precision bf16: the matrix products (the linear maps, Q K^T, the weights times V, the logits) run in
    bfloat16 under torch.autocast, on CPUs with AVX-512 BF16 or AMX and on CUDA GPUs alike. The weights, their
    gradients and Adam stay float32, and so does the residual stream: x + Dropout(Sublayer(x)) adds a bfloat16
    sub-layer output to a float32 x, so every LayerNorm reads and writes float32. fp32 changes nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_logits(logits: Tensor, precision: str) -> Tensor:
    """The loss takes its log-softmax over V in float32: in bfloat16 (8 bits of mantissa) it is only good to 2-3
    digits."""
    return logits.float() if precision == "bf16" else logits


def fuse_adam(optimizer: torch.optim.Adam, fused: bool) -> None:
    """Adam's fused update: one kernel over every tensor instead of a loop of small operations per tensor (the model
    has 16 per encoder layer and 26 per decoder layer, W^Q, W^K and W^V apart). It is the same update, rounded
    otherwise, so bf16 takes it and fp32 keeps the plain loop and its results bit for bit. Adam reads the flag from
    its parameter groups at every step; a loaded state dict brings the flag of the run that saved it."""
    for group in optimizer.param_groups:
        group["fused"] = fused or None  # None: PyTorch's default, the loop on a CPU


def held_out_loss(model, examples: list[Example], batch_tokens: int, device, precision: str = "fp32") -> float:
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in length_batches(examples, batch_tokens, seed=0, epoch=0):
            src, tgt = collate([examples[i] for i in batch], device)
            labels = tgt[:, 1:]
            n = int((labels != PAD_ID).sum())
            with autocast(device, precision):
                logits = model(src, tgt[:, :-1])
            loss = smoothed_loss_sum(loss_logits(logits, precision), labels, model.config.label_smoothing, PAD_ID)
            total, tokens = total + loss.item(), tokens + n
    return total / max(tokens, 1)


# -----------------------------------------------------------------------------
# train
# -----------------------------------------------------------------------------

MODEL_FLAGS = (
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "dropout",
    "warmup_steps",
    "lr_factor",
    "max_len",
    "label_smoothing",
)


def config_from_args(args: argparse.Namespace, vocab_size: int) -> TransformerConfig:
    # CPU-sized defaults. Warm-up 400 peaks at a learning rate of 6.3e-3: with 200 (8.8e-3) the numbers task
    # ended between 97.8% and 99.4% exact match over three seeds after 500 steps, with 400 between 99.3% and 99.9%
    settings = {"d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256, "dropout": 0.0, "warmup_steps": 400}
    if args.preset:
        base = TransformerConfig.paper_big if args.preset == "big" else TransformerConfig.paper_base
        paper = base(vocab_size, vocab_size)
        settings = {k: getattr(paper, k) for k in ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "warmup_steps")}
    for name in MODEL_FLAGS:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    settings.setdefault("max_len", 128)
    try:
        return TransformerConfig(vocab_size, vocab_size, **settings)
    except ValueError as error:
        raise UserError(str(error)) from None


def prepare_data(args) -> dict[str, list[tuple[str, str]]]:
    """The three splits as text pairs. Without --valid / --test they are cut from the training data by hash."""
    train = read_pairs(args.data, args.src, args.tgt, "the training data")
    if train is None:
        if args.valid or args.test:
            raise UserError("--valid and --test go with your own data (--data, or --src and --tgt)")
        return numbers_task(args.numbers, 500, 1000, english_to_german=args.task == "numbers-en-de")
    if not train:
        raise UserError("the training data holds no sentence pairs")
    splits = {"train": [], "valid": [], "test": []}
    for pair in train:
        splits[split_of(pair[0])].append(pair)
    for name in ("valid", "test"):
        files = getattr(args, name)
        if files:
            if len(files) > 2:
                raise UserError(f"--{name} takes FILE.tsv or SRC_FILE TGT_FILE, got {len(files)} files")
            given = (
                read_pairs(files[0], None, None, f"--{name}")
                if len(files) == 1
                else read_pairs(None, *files, f"--{name}")
            )
            # a given split replaces the hashed one, whose pairs go back to training; its sources leave training
            held = {s for s, _ in given}
            splits["train"] = [p for p in splits["train"] + splits[name] if p[0] not in held]
            splits[name] = given
    if not splits["train"]:
        raise UserError("no training pairs left after holding out the validation and test splits")
    return splits


def make_scheduler(optimizer, config: TransformerConfig, steps: int, cooldown: float):
    """Eq. (3) (times config.lr_factor), as transformer.py's make_optimizer drives it; with cooldown > 0 the rate
    falls linearly to zero over the last `cooldown` fraction of the steps, so training ends annealed rather than at
    two thirds of its peak. cooldown = 0 is the paper's schedule."""
    from transformer import learning_rate

    span = cooldown * steps

    def factor(i: int) -> float:  # i counts the steps taken, from 0; the paper's step is i + 1
        rate = config.lr_factor * learning_rate(i + 1, config.d_model, config.warmup_steps)
        return rate if span <= 0 else rate * min(1.0, max(steps - i, 0) / span)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(args: argparse.Namespace, console: Console) -> int:
    procs, device = start_processes(args.device)
    try:
        return train_run(args, console, procs, device)
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Start:
    """Where a run starts: afresh from the data, or from the latest checkpoint in its directory (meta and states)."""

    config: TransformerConfig
    tokenizer: object
    splits: dict[str, list[tuple[str, str]]]
    seed: int
    dtype: str
    resume_from: Path | None = None
    meta: dict | None = None
    states: dict | None = None


def start_or_resume(args: argparse.Namespace, procs: Processes) -> Start:
    """A new run learns its BPE from the data and writes its splits and tokenizer; a resumed one reads them back, and
    refuses flags that disagree with its checkpoint. args.batch_tokens and args.pool are settled here."""
    run_dir = Path(args.out)
    resume_from = None
    if checkpoints(run_dir):
        if not args.resume:
            raise UserError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
        resume_from = checkpoints(run_dir)[-1]
    elif args.resume:
        raise UserError(f"{run_dir}: no checkpoint to resume from in {checkpoint_dir(run_dir)}")

    if resume_from is not None:
        meta, states = load_checkpoint(resume_from)
        tokenizer = tokenizer_from_json(meta["tokenizer"])
        config = TransformerConfig(**meta["config"])
        # only what was asked for on this command line has to agree with the checkpoint
        asked = asdict(config_from_args(args, config.src_vocab_size)) if args.preset else {}
        asked |= {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
        clash = [f"{k}={getattr(config, k)} (asked {v})" for k, v in asked.items() if getattr(config, k) != v]
        if clash:
            raise UserError(f"{resume_from} is a checkpoint of another config: {', '.join(clash)}")
        # the batches depend on the token budget and the pool, and the saved position points into those batches
        for name, flag in BATCHING.items():
            saved = meta.get(name, LEGACY_POOL if name == "pool" else None)
            if getattr(args, name) is not None and getattr(args, name) != saved:
                raise UserError(f"{resume_from} was trained with {flag} {saved}, not {getattr(args, name)}")
            setattr(args, name, saved)
        splits = {name: read_tsv(run_dir / f"{name}.tsv", may_be_empty=True) for name in ("train", "valid", "test")}
        start = Start(config, tokenizer, splits, meta["seed"], meta["dtype"], resume_from, meta, states)
    else:
        splits = prepare_data(args)
        # like sentencepiece's input_sentence_size: BPE from an even sample of the training pairs, which is enough
        # to find the frequent pieces and keeps its cost (which grows faster than the text) small
        sample = even_sample(splits["train"], args.bpe_pairs)
        tokenizer = train_tokenizer([t for pair in sample for t in pair], args.vocab_size, args.pre_tokenizer)
        config = config_from_args(args, tokenizer.get_vocab_size())
        start = Start(config, tokenizer, splits, args.seed, args.dtype)
        args.batch_tokens = args.batch_tokens or DEFAULT_BATCH_TOKENS
        args.pool = args.pool or (POOL if args.data or args.src else POOL_NUMBERS)
    if args.precision == "bf16" and start.dtype != "float32":  # --dtype float64, or a resumed float64 run
        raise UserError(f"--precision bf16 trains float32 weights under autocast, not {start.dtype}")
    if args.precision == "auto" and start.dtype != "float32":
        args.precision = "fp32"  # float64 weights are a test's: autocast has nothing to offer them
    if resume_from is None and procs.master:
        checkpoint_dir(run_dir).mkdir(parents=True, exist_ok=True)
        for name, pairs in splits.items():
            write_tsv(run_dir / f"{name}.tsv", pairs)
        (run_dir / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    return start


def train_run(args: argparse.Namespace, console: Console, procs: Processes, device: torch.device) -> int:
    run_dir = Path(args.out)
    say = console.print if procs.master else (lambda *a, **k: None)
    start = start_or_resume(args, procs)
    config, tokenizer, splits, seed, dtype = start.config, start.tokenizer, start.splits, start.seed, start.dtype
    resume_from, meta, states = start.resume_from, start.meta, start.states
    train_examples, dropped = make_examples(tokenizer, splits["train"], config.max_len)
    valid_examples, _ = make_examples(tokenizer, splits["valid"], config.max_len)
    if dropped:
        say(f"[yellow]left out {dropped} training pairs longer than max_len={config.max_len} tokens[/]")
    if train_examples and (unknown := unknown_share(train_examples)) > UNKNOWN_WARNING:
        say(
            f"[yellow]{100 * unknown:.2f}% of the training pieces are <unk>: characters the BPE never saw; "
            "learn it from more pairs (--bpe-pairs) or a larger --vocab-size[/]"
        )
    args.precision, why = choose_precision(args.precision, device)
    say(f"precision {why}")
    if not train_examples:
        raise UserError(f"every training pair is longer than max_len={config.max_len} tokens")
    agree(
        procs,
        "the checkpoint to resume from, the vocabulary or the training data",
        resume_from.name if resume_from is not None else None,
        tokenizer.to_str(),
        asdict(config),
        splits["train"],
    )

    torch.manual_seed(seed)
    model = Transformer(config).to(device=device, dtype=getattr(torch, dtype))
    optimizer, _ = make_optimizer(model, config, amsgrad=True)  # see transformer.py, deviation 5
    scheduler = make_scheduler(optimizer, config, args.steps, args.cooldown)
    fused = args.precision == "bf16" and device.type in ("cpu", "cuda")
    fuse_adam(optimizer, fused)
    step, epoch, position, seconds_before = 0, 0, 0, 0.0
    if resume_from is not None:
        model.load_state_dict(states["model"])
        optimizer.load_state_dict(states["optimizer"])
        fuse_adam(optimizer, fused)  # the saved groups say how the run that wrote them stepped, not how this one does
        scheduler.load_state_dict(states["scheduler"])
        step, epoch, position = meta["step"], meta["epoch"], meta["position"]
        seconds_before = meta.get("train_seconds", 0.0)
        torch.set_rng_state(states["rng"]["torch"])
        if device.type == "cuda" and "cuda" in states["rng"]:
            torch.cuda.set_rng_state(states["rng"]["cuda"])  # dropout draws on the GPU there
        say(f"resuming {run_dir} at step {step} of {args.steps}")
    trained = model
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # it sums each gradient over the ranks and divides by their number (see train_step); the only buffer is
        # the fixed positional encoding, so there is nothing to send before every forward
        ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def write_checkpoint() -> Path:
        path = checkpoint_dir(run_dir) / f"step-{step:07d}.pt"
        if procs.master:
            meta_out = {
                "config": asdict(config),
                "tokenizer": tokenizer.to_str(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "seed": seed,
                "dtype": dtype,
                "precision": args.precision,  # of the run that wrote it: the weights are float32 either way
                "batch_tokens": args.batch_tokens,
                "pool": args.pool,
                "cooldown": args.cooldown,
                "steps": args.steps,
                "train_seconds": seconds_before + seconds,
            }
            states_out = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state()}
                | ({"cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
            }
            save_checkpoint(path, meta_out, states_out)
            for old in checkpoints(run_dir)[: -args.keep]:
                old.unlink()
        if procs.world > 1:
            dist.barrier()  # every rank resumes from the same file, so none runs ahead of its writing
        return path

    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if procs.master else None

    def log(record: dict) -> None:
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    say(
        f"[bold]{len(train_examples)}[/] training pairs, {len(valid_examples)} validation; shared BPE vocabulary "
        f"{config.src_vocab_size}; model d_model={config.d_model}, h={config.n_heads}, N={config.n_layers}, "
        f"d_ff={config.d_ff}, P_drop={config.dropout} on {device}"
        + (f" x {procs.world} processes" if procs.world > 1 else "")
    )
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not procs.master,
    )
    batches = length_batches(train_examples, args.batch_tokens, seed, epoch, procs.world, args.pool)
    seconds, tokens_seen, pad_share, interrupted = 0.0, 0, [], False
    last_valid = {}
    # Ctrl-C only raises a flag, and training stops between two steps: an interrupt inside a step would save the
    # weights of one step under the number of the step before. Under torchrun the ranks agree on it at every step.
    stop = {"asked": False}

    def ask_to_stop(signum, frame):
        stop["asked"] = True

    previous_handler = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        with progress:
            bar = progress.add_task("train", total=args.steps, completed=step, loss=float("nan"), lr=0.0, tps=0.0)
            while step < args.steps:
                if all_sum(torch.tensor([float(stop["asked"])], device=device), procs).item() > 0:
                    raise KeyboardInterrupt
                if position >= len(batches):
                    epoch, position = epoch + 1, 0
                    batches = length_batches(train_examples, args.batch_tokens, seed, epoch, procs.world, args.pool)
                tick = time.perf_counter()
                batch = batches[position]
                # N processes see the stream one process sees: each takes every N-th sentence of the global batch
                if len(batch) < procs.world:  # every rank holds the same batches, so all of them stop here
                    raise UserError(
                        f"a batch of {len(batch)} sentences cannot feed {procs.world} processes: "
                        "give more training pairs or a larger --batch-tokens"
                    )
                mine = [train_examples[i] for i in batch[procs.rank :: procs.world]]
                if procs.world > 1 and config.dropout > 0:
                    # Every rank starts from the same seed: left alone, ranks whose shares have the same shape would
                    # drop the same units. Seeded from (seed, step, rank) instead, each rank draws its own masks,
                    # and a resume draws them again without any random state to restore (on GPUs too).
                    torch.manual_seed((seed * 1_000_003 + step) * procs.world + procs.rank)
                src, tgt = collate(mine, device)
                pad_share.append(padding_share(src, tgt))
                loss, n_tokens = train_step(
                    trained, model.config, src, tgt, optimizer, scheduler, procs, args.precision
                )
                step, position = step + 1, position + 1
                tokens_seen += n_tokens
                seconds += time.perf_counter() - tick  # training only: validation and saving are not counted
                lr = scheduler.get_last_lr()[0]
                progress.update(bar, completed=step, loss=loss, lr=lr, tps=tokens_seen / max(seconds, 1e-9))
                if step % args.log_every == 0 or step == args.steps:
                    log(
                        {
                            "step": step,
                            "loss": loss,
                            "lr": lr,
                            "tokens_per_s": tokens_seen / seconds,
                            "padding": pad_share[-1],
                        }
                    )
                if args.eval_every and step % args.eval_every == 0 and step < args.steps:
                    last_valid = validate(model, tokenizer, splits["valid"], valid_examples, args, device, procs)
                    log({"step": step} | last_valid)
                    if last_valid:
                        say(
                            f"step {step}: validation loss {last_valid['valid_loss']:.3f}, BLEU {last_valid['valid_bleu']:.1f} "
                            f"(greedy), {last_valid['valid_looping']} of {min(len(splits['valid']), 200)} loop"
                        )
                if args.save_every and step % args.save_every == 0 and step < args.steps:
                    write_checkpoint()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    if interrupted and procs.world > 1:
        # torchrun's agent passes a Ctrl-C on as a second SIGINT: the save must not be cut short by that echo
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    path = write_checkpoint()  # one is always written when training ends, or is interrupted
    if interrupted:
        say(f"[yellow]interrupted at step {step}: saved {path}; continue with --resume[/]")
        return 130
    last_valid = validate(model, tokenizer, splits["valid"], valid_examples, args, device, procs)
    log({"step": step} | last_valid)
    if metrics is not None:
        metrics.close()
    say(summary(f"{run_dir}: step {step}", seconds, tokens_seen, pad_share, last_valid, path))
    return 0


def summary(title: str, seconds: float, tokens: int, pad_share: list[float], last_valid: dict, path: Path) -> Table:
    """The table a finished run ends with."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    rows = [
        ("training time this run", f"{seconds:.1f} s"),
        ("tokens per second", f"{tokens / max(seconds, 1e-9):,.0f}"),
        ("padding share of a batch (mean)", f"{100 * sum(pad_share) / max(len(pad_share), 1):.1f}%"),
        ("validation loss", f"{last_valid['valid_loss']:.3f}" if last_valid else "no validation pairs"),
        ("validation BLEU (greedy)", f"{last_valid['valid_bleu']:.1f}" if last_valid else "no validation pairs"),
        ("checkpoint", str(path)),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def train_step(
    trained,
    config: TransformerConfig,
    src: Tensor,
    tgt: Tensor,
    optimizer,
    scheduler,
    procs: Processes,
    precision: str = "fp32",
):
    """One step of teacher forcing over this process's share of the global batch. Returns (the global mean loss,
    the global number of target tokens). In bf16 the forward runs under autocast and the loss in float32.

    The loss is normalised by the number of target tokens of the whole global batch, all-reduced: ranks hold
    different token counts, and the mean of per-rank means weights a token of a short share more than one of a long
    share, which is a different and wrong gradient. DistributedDataParallel averages the gradients over the ranks,
    so each rank's sum is scaled by world / tokens: the average of those is sum over all tokens / tokens."""
    trained.train()
    labels = tgt[:, 1:]  # (b, T - 1)
    n_local = (labels != PAD_ID).sum()
    n_global = all_sum(n_local, procs)
    with autocast(src.device, precision):
        logits = trained(src, tgt[:, :-1])  # (b, T - 1, V)
    local_sum = smoothed_loss_sum(loss_logits(logits, precision), labels, config.label_smoothing, PAD_ID)
    loss = local_sum * procs.world / n_global
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    global_mean = all_sum(local_sum.detach(), procs) / n_global
    return global_mean.item(), int(n_global)


def validate(model, tokenizer, pairs, examples, args, device, procs: Processes) -> dict:
    """Validation loss, and greedy BLEU and the looping answers on (up to) the first 200 validation pairs, by rank 0
    alone."""
    result = {}
    if procs.master and examples:
        was = model.training
        result["valid_loss"] = held_out_loss(model, examples, args.batch_tokens, device, args.precision)
        some = pairs[:200]
        # decoded in float32 whatever --precision: one token at a time, autocast's casts of every weight at every
        # step cost more than bfloat16 saves (greedy over test2016 on two cores: 273 s in bf16, 13 s in fp32)
        hypotheses = translate_texts(model.eval(), tokenizer, [s for s, _ in some], beam=1, alpha=0.0)
        scores = score(hypotheses, [t for _, t in some])
        result["valid_bleu"], result["valid_looping"] = scores["bleu"], scores["looping"]
        # one looping answer, kept as it was written: what looping looks like at this step (the README's example)
        looping = [[s, h] for (s, _), h in zip(some, hypotheses, strict=True) if loops(h)]
        result["valid_loop_example"] = looping[0] if looping else None
        model.train(was)
    if procs.world > 1:
        dist.barrier()
    return result


# -----------------------------------------------------------------------------
# evaluate, translate, average
# -----------------------------------------------------------------------------


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def evaluate(args: argparse.Namespace, console: Console) -> int:
    path, meta, model, tokenizer = load_run(args.run, device_named(args.device))
    pairs = read_pairs(args.data, args.src, args.tgt, "the test data")
    if pairs is None:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        pairs = read_tsv(run_dir / "test.tsv")
    if not pairs:
        raise UserError("the test data holds no sentence pairs")
    if meta.get("averaged"):
        console.print(f"the average of {', '.join(meta['averaged'])} (§6.1)", style="dim")
    start = time.perf_counter()
    device = device_named(args.device)
    with autocast(device, decoding_precision(args.precision, device)):
        hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs], args.beam, args.alpha)
    seconds = time.perf_counter() - start
    result = score(hypotheses, [t for _, t in pairs])
    table = Table(title=f"held-out examples ({path.name}, beam {args.beam})")
    for column in ("source", "reference", "translation", ""):
        table.add_column(column)
    for (s, t), h in list(zip(pairs, hypotheses, strict=True))[: args.examples]:
        table.add_row(s, t, h, "[green]✓[/]" if h == t else "[red]✗[/]")
    console.print(table)
    console.print(f"sacreBLEU {result['bleu_signature']}")
    console.print(f"sacreBLEU lowercased {result['bleu_lowercase_signature']}")
    console.print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")
    if result["bleu_meaningless"]:
        console.print("[yellow]most references are one word: BLEU counts word 4-grams, so read chrF and exact match[/]")
    console.print(f"decoded {result['n']} sentences in {seconds:.1f} s; {result['looping']} of them loop", style="dim")
    console.print(
        (f"{args.title}: " if args.title else "")
        + f"BLEU {result['bleu']:.1f} (sacreBLEU, cased), {result['bleu_lowercase']:.1f} lowercased, "
        f"exact match {100 * result['exact'] / result['n']:.1f}% ({result['exact']}/{result['n']}), "
        f"beam {args.beam}, after {duration(meta.get('train_seconds', 0.0))} of training",
        soft_wrap=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result | {"beam": args.beam, "alpha": args.alpha}, indent=2) + "\n")
    return 0


def translate(args: argparse.Namespace, console: Console) -> int:
    _, _, model, tokenizer = load_run(args.run, device_named(args.device))
    # a file piped in from Notepad or Excel starts with a byte-order mark: it is not part of the first sentence
    texts = args.text or [line for line in sys.stdin.read().removeprefix("\ufeff").splitlines() if line.strip()]
    if not texts:
        raise UserError("nothing to translate: give sentences as arguments, or one per line on stdin")
    _, too_long = source_ids(tokenizer, texts, model.config.max_len)
    if too_long:  # translate_texts keeps the first max_len tokens of such a sentence
        what = "1 sentence is" if too_long == 1 else f"{too_long} sentences are"
        print(f"{PROG}: {what} longer than max_len={model.config.max_len} tokens and cut to it", file=sys.stderr)
    device = device_named(args.device)
    with autocast(device, decoding_precision(args.precision, device)):
        translations = translate_texts(model, tokenizer, texts, args.beam, args.alpha)
    for translation in translations:
        print(translation)
    if args.plot:
        plot_alignment(model, tokenizer, texts[0], args.beam, args.alpha, Path(args.plot))
        console.print(f"cross-attention of {texts[0]!r} drawn to {args.plot}", style="dim")
    return 0


def cross_attention(model, tokenizer, text: str, beam: int, alpha: float) -> tuple[list[str], list[str], Tensor]:
    """The source pieces, the translation's pieces, and the last decoder layer's cross-attention averaged over its
    heads, (T, S), read off one teacher-forced pass over the translation the model wrote."""
    (src_ids,), _ = source_ids(tokenizer, [text], model.config.max_len)
    src = torch.tensor([src_ids])  # (1, S)
    out = decode_batch(model, src, beam, alpha)[0].tolist()
    out = out[: out.index(EOS_ID) + 1] if EOS_ID in out else out
    attention = model.decoder.layers[-1].cross_attn
    attention.keep_weights = True
    try:
        with torch.no_grad():
            model(src, torch.tensor([out[:-1]]))
        weights = attention.last_weights[0].mean(dim=0)  # (H, T, S) -> (T, S)
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


def fetch(args: argparse.Namespace, console: Console) -> int:
    paths = fetch_multi30k(args.out, args.source)
    for path in paths:
        console.print(f"{path}  {sum(1 for _ in path.open('rb')):,} lines")
    console.print(
        f"Multi30k in {args.out}: train with  --src {args.out}/train.de --tgt {args.out}/train.en "
        f"--valid {args.out}/val.de {args.out}/val.en --test {args.out}/test2016.de {args.out}/test2016.en",
        soft_wrap=True,
    )
    return 0


def average(args: argparse.Namespace, console: Console) -> int:
    """§6.1: the base models use "a single model obtained by averaging the last 5 checkpoints"."""
    run_dir = Path(args.run)
    found = checkpoints(run_dir) if run_dir.is_dir() else []
    if not found:
        raise UserError(f"{run_dir}: no checkpoints to average")
    if args.last > len(found):
        raise UserError(f"--last {args.last} asks for more checkpoints than {run_dir} keeps ({len(found)})")
    chosen = found[-args.last :]
    loaded = [load_checkpoint(p) for p in chosen]
    if any(meta["config"] != loaded[-1][0]["config"] for meta, _ in loaded):
        raise UserError(f"the last {args.last} checkpoints of {run_dir} have different configs")
    weights = {}
    for name, tensor in loaded[-1][1]["model"].items():
        stack = torch.stack([states["model"][name].double() for _, states in loaded])
        weights[name] = stack.mean(dim=0).to(tensor.dtype)
    meta = dict(loaded[-1][0]) | {"averaged": [p.name for p in chosen]}
    out = Path(args.out)
    save_checkpoint(out, meta, {"model": weights})
    console.print(f"averaged {', '.join(p.name for p in chosen)} into {out}")
    return 0


# -----------------------------------------------------------------------------
# The command line
# -----------------------------------------------------------------------------


def number_from_0(below: float | None = None, zero: bool = True):
    """An argparse type: a number >= 0 (> 0 without `zero`), and below `below` when given."""
    wanted = ("a number >= 0" if zero else "a number > 0") if below is None else f"a number in [0, {below:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= 0 and (zero or value > 0) and (below is None or value < below)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


unit_float, non_negative_float, positive_float = number_from_0(below=1.0), number_from_0(), number_from_0(zero=False)


def add_data_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--data", metavar="FILE.tsv", help=f"{what}: source<TAB>target per line")
    parser.add_argument("--src", metavar="FILE", help=f"{what}: source sentences, one per line (with --tgt)")
    parser.add_argument("--tgt", metavar="FILE", help=f"{what}: their translations, line by line")


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, help="CPU threads per process (default: torch's choice)")


def add_precision_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=f"bf16 {what} under bfloat16 autocast, the weights in float32; auto (default) takes bf16 only where "
        "the processor computes it natively",
    )


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    add_threads_flag(parser)
    add_precision_flag(parser, "decodes")
    parser.add_argument("--beam", type=positive_int, default=4, help="beam size; 1 decodes greedily (default: 4)")
    parser.add_argument("--alpha", type=non_negative_float, default=0.6, help="length penalty (default: 0.6)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu", help="default: cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description="Train, evaluate and use a Transformer on parallel text.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = commands.add_parser("train", help="train a model (the numbers task unless --data or --src/--tgt)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="where the checkpoints, tokenizer and metrics go")
    add_data_flags(p, "training data")
    for name in ("valid", "test"):
        p.add_argument(
            f"--{name}",
            nargs="+",
            metavar="FILE",
            help=f"{name} pairs as FILE.tsv or SRC_FILE TGT_FILE (default: 1%% of the data, held out by hash)",
        )
    p.add_argument(
        "--task",
        choices=("numbers", "numbers-en-de"),
        default="numbers",
        help="the built-in task: German -> English numbers (default), or English -> German (score it by chrF)",
    )
    p.add_argument("--numbers", type=positive_int, default=50_000, help="training pairs of the numbers task")
    p.add_argument("--vocab-size", type=positive_int, default=300, help="shared BPE vocabulary (default: 300)")
    p.add_argument("--bpe-pairs", type=positive_int, default=10_000, help="pairs the BPE learns from (default: 10000)")
    p.add_argument(
        "--pre-tokenizer",
        choices=PRE_TOKENIZERS,
        default="punctuation",
        help="what BPE's words are cut at: spaces and punctuation (default), or spaces only",
    )
    p.add_argument(
        "--cooldown",
        type=unit_float,
        default=0.0,
        help="fraction of the steps over which the rate falls linearly to 0 at the end (default: 0, Eq. (3) alone)",
    )
    p.add_argument("--preset", choices=("base", "big"), help="Table 3's base or big model")
    p.add_argument("--d-model", dest="d_model", type=positive_int)
    p.add_argument("--heads", dest="n_heads", type=positive_int)
    p.add_argument("--layers", dest="n_layers", type=positive_int)
    p.add_argument("--d-ff", dest="d_ff", type=positive_int)
    p.add_argument("--dropout", type=unit_float)
    p.add_argument("--label-smoothing", dest="label_smoothing", type=unit_float)
    p.add_argument("--warmup", dest="warmup_steps", type=positive_int, help="warm-up steps of Eq. (3)")
    p.add_argument(
        "--lr-factor",
        dest="lr_factor",
        type=positive_float,
        help="multiplies Eq. (3)'s learning rate (default: 1, the paper's schedule)",
    )
    p.add_argument("--max-len", dest="max_len", type=positive_int, help="longest sentence in tokens (default: 128)")
    p.add_argument(
        "--steps", type=positive_int, default=DEFAULT_STEPS, help=f"steps to reach (default: {DEFAULT_STEPS})"
    )
    p.add_argument(
        "--batch-tokens",
        type=positive_int,
        help=f"token budget of a global batch (default: {DEFAULT_BATCH_TOKENS}; a resume keeps the run's)",
    )
    p.add_argument(
        "--pool",
        type=positive_int,
        help=f"batches' worth of sentences sorted by length together (default: {POOL}, the numbers task "
        f"{POOL_NUMBERS}; a resume keeps the run's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu", help="default: cpu")
    add_threads_flag(p)
    add_precision_flag(p, "trains")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.add_argument("--keep", type=positive_int, default=5, help="checkpoints kept (default: 5)")
    p.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (default: at the end only)")
    p.add_argument("--eval-every", type=int, default=250, help="steps between validations; 0: at the end only (250)")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between lines of metrics.jsonl")

    p = commands.add_parser("evaluate", help="BLEU, chrF and exact match on the held-out test split or your file")
    p.add_argument("run", metavar="RUN_DIR", help="a run directory (its latest checkpoint) or a checkpoint file")
    add_data_flags(p, "test data")
    add_decoding_flags(p)
    p.add_argument("--examples", type=non_negative_int, default=8, help="examples to show (default: 8)")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.add_argument("--title", help="what the last line starts with, e.g. the test set's name")

    p = commands.add_parser("translate", help="translate sentences given as arguments or on stdin")
    p.add_argument("run", metavar="RUN_DIR", help="a run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("text", nargs="*", help="sentences (default: one per line on stdin)")
    add_decoding_flags(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw the cross-attention of the first sentence")

    p = commands.add_parser("average", help="average the weights of the last K checkpoints (§6.1)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--last", type=positive_int, default=5, help="how many (default: 5)")
    p.add_argument("--out", required=True, metavar="FILE", help="the averaged checkpoint")

    p = commands.add_parser("fetch", help="download a data set, checked against pinned SHA-256 sums")
    p.add_argument("dataset", choices=("multi30k",), help="Multi30k task 1, German-English (train, val, test2016)")
    p.add_argument("--out", default="data/multi30k", metavar="DIR", help="where the files go (data/multi30k)")
    p.add_argument(
        "--from",
        dest="source",
        metavar="DIR_OR_URL",
        help="a folder holding the .gz files, or a mirror's base URL (default: the Multi30k repository)",
    )

    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(quiet=getattr(args, "quiet", False))
    commands = {"train": train, "evaluate": evaluate, "translate": translate, "average": average, "fetch": fetch}
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return commands[args.command](args, console)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
