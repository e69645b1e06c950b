"""Translate for real: train transformer.py's model on parallel text, decode with beam search, score with BLEU.

This file sits beside transformer.py the way a training script sits beside its model: the model, the loss, the
optimiser and the schedule live there, and greedy decoding and beam search with a key/value cache in bonus stage 14;
both are imported, never copied. This file holds the commands and the training loop, and reads top to bottom; what
a real task needs around them (the data, a shared BPE, batches by length, checkpoints, processes, precision,
decoding and scoring, the settings of each command) lives in the package beside it, translation/.

    python translate.py train --out runs/numbers                      # the built-in German -> English numbers task
    python translate.py train --out runs/mine --data pairs.tsv        # source<TAB>target per line (Tatoeba, ManyThings)
    python translate.py fetch multi30k --out data/multi30k           # Multi30k, checked against pinned SHA-256 sums
    python translate.py train --out runs/m30k --recipe m30k --src train.de --tgt train.en   # line-aligned files
    python translate.py evaluate runs/numbers [--beam 4] [--alpha 0.6]
    python translate.py translate runs/numbers "dreihundertzweiundvierzig" [--plot alignment.png]
    python translate.py average runs/numbers --last 5 --out runs/numbers/averaged.pt
    python translate.py export-web runs/numbers --out web             # the model in a page that runs offline
    torchrun --standalone --nproc-per-node 2 translate.py train --out runs/ddp   # the same command, N processes

Every error the user's input or machine causes (a value out of range, a missing or unwritable path, bytes that are
not UTF-8, a run directory without a checkpoint, a resume with other settings, ...) costs one line on stderr and exit
status 2, and leaves what is already in the run directory alone. A bug of ours still shows its traceback.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from torch import Tensor

from transformer import Transformer, TransformerConfig, learning_rate, make_optimizer
from translation.batches import (
    PAD_ID,
    collate,
    even_sample,
    length_batches,
    make_examples,
    padding_share,
    tokenizer_from_json,
    train_tokenizer,
    unknown_share,
)
from translation.checkpoints import (
    checkpoint_dir,
    checkpoints,
    load_checkpoint,
    load_model,
    load_run,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)
from translation.corpora import UserError, fetch_multi30k, numbers_task, read_pairs, read_tsv, split_of, write_tsv
from translation.decoding import loops, plot_alignment, score, source_ids, translate_texts
from translation.precision import autocast, choose_precision, decoding_precision, fuse_adam, loss_logits
from translation.processes import Processes, agree, all_sum, catching_ctrl_c, device_named, start_processes
from translation.reporting import Metrics, duration, evaluation_report, summary, training_bar
from translation.settings import (
    AverageSettings,
    DecodeSettings,
    ExportSettings,
    FetchSettings,
    TrainSettings,
    parse_command_line,
    stored_settings,
)

__all__ = ["load_model", "load_tokenizer", "load_run", "main"]  # the API the README documents
PROG = "translate.py"
UNKNOWN_WARNING = 0.001  # a share of <unk> pieces above this (1 in 1,000) gets a warning

# Named sets of settings: `--recipe m30k` is these flags; a flag given beside it wins. The validation runs that chose
# it are in the README ("A real language"): punctuation split off the BPE's words, and the rate cooled down to zero
# over the last 40% of the steps, at the peak rate (2.2e-3) of the best run there; steps to fit half an hour of two
# CPU cores in float32.
RECIPES = {
    "m30k": {
        "d_model": 256,
        "n_heads": 8,
        "n_layers": 3,
        "d_ff": 512,
        "dropout": 0.1,
        "vocab_size": 8000,
        "bpe_pairs": 29_000,
        "pre_tokenizer": "punctuation",
        "batch_tokens": 3000,
        "pool": 64,
        "warmup_steps": 400,
        "lr_factor": 0.7,
        "cooldown": 0.4,
        "steps": 1400,
        "save_every": 100,
        "keep": 5,
        "eval_every": 500,
    },
}


# -----------------------------------------------------------------------------
# The loss and the schedule
# -----------------------------------------------------------------------------


def smoothed_loss_sum(logits: Tensor, target: Tensor, smoothing: float, pad_id: int) -> Tensor:
    """The sum over real target tokens of transformer.py's label_smoothed_loss, without building its q.

    q puts 1 - eps on the true token t and eps / (V - 2) on every token but t and padding, so
    -sum_v q_v log p_v = -(1 - eps) log p_t - eps / (V - 2) (sum_v log p_v - log p_t - log p_pad),
    and log p_v = z_v - logsumexp(z): one logsumexp and one sum over V per token, not a (B*T, V) q and its product
    with the log-probabilities (tests/test_recipe.py holds the two equal in float64, to 1e-10).
    logits (B, T, V), target (B, T) -> a scalar."""
    V = logits.size(-1)
    keep = target != pad_id  # (B, T)
    z, target = logits[keep], target[keep]  # (n, V), (n,): padding positions cost nothing
    lse = z.logsumexp(dim=-1)  # (n,)
    log_p_true = z.gather(1, target[:, None]).squeeze(1) - lse  # (n, 1) -> (n,)
    log_p_pad = z[:, pad_id] - lse  # (n,)
    rest = z.sum(dim=-1) - V * lse - log_p_true - log_p_pad  # (n,): log p summed over the V - 2 tokens sharing eps
    return -((1.0 - smoothing) * log_p_true + smoothing / (V - 2) * rest).sum()


def make_scheduler(optimizer, config: TransformerConfig, steps: int, cooldown: float):
    """Eq. (3) times config.lr_factor, as transformer.py's make_optimizer drives it; with cooldown > 0 the rate then
    falls linearly to zero over the last `cooldown` of the steps, so training ends annealed, not at two thirds of
    its peak. cooldown = 0 is the paper's schedule."""
    span = cooldown * steps

    def factor(i: int) -> float:  # i counts the steps taken, from 0; the paper's step is i + 1
        rate = config.lr_factor * learning_rate(i + 1, config.d_model, config.warmup_steps)
        return rate if span <= 0 else rate * min(1.0, max(steps - i, 0) / span)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -----------------------------------------------------------------------------
# A run: started from the data, or resumed from its latest checkpoint
# -----------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run is made of, and where its training stands."""

    settings: TrainSettings
    config: TransformerConfig
    tokenizer: object
    splits: dict[str, list[tuple[str, str]]]
    step: int = 0
    epoch: int = 0
    position: int = 0  # the next batch of this epoch
    seconds: float = 0.0  # of training alone, over every resume
    states: dict | None = None  # what the checkpoint resumed from holds
    resumed_from: Path | None = None


def prepare_data(settings: TrainSettings) -> dict[str, list[tuple[str, str]]]:
    """The three splits as text pairs. Without --valid / --test they are cut from the training data by hash."""
    train = read_pairs(settings.data, settings.src, settings.tgt, "the training data")
    if train is None:
        return numbers_task(settings.numbers, 500, 1000, english_to_german=settings.task == "numbers-en-de")
    splits = {"train": [], "valid": [], "test": []}
    for pair in train:
        splits[split_of(pair[0])].append(pair)
    for name in ("valid", "test"):
        files = getattr(settings, name)
        if files:
            given = read_pairs(files[0], None, None, f"--{name}") if len(files) == 1 else read_pairs(None, *files, "")
            # a given split replaces the hashed one, whose pairs go back to training; its sources leave training
            held = {s for s, _ in given}
            splits["train"] = [p for p in splits["train"] + splits[name] if p[0] not in held]
            splits[name] = given
    if not splits["train"]:
        raise UserError("no training pairs left after holding out the validation and test splits")
    return splits


def model_config(settings: TrainSettings, vocab_size: int) -> TransformerConfig:
    try:
        return TransformerConfig(vocab_size, vocab_size, **settings.model_config())
    except ValueError as error:  # d_model not divisible by h, and the like
        raise UserError(str(error)) from None


def start_run(settings: TrainSettings, procs: Processes) -> Run:
    """A new run learns its BPE from the data and writes its splits and tokenizer; a resumed one reads them back and
    takes its stored settings, refusing given ones that differ."""
    run_dir = Path(settings.out)
    found = checkpoints(run_dir) if run_dir.is_dir() else []
    if found and not settings.resume:
        raise UserError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
    if settings.resume:
        if not found:
            raise UserError(f"{run_dir}: no checkpoint to resume from in {checkpoint_dir(run_dir)}")
        meta, states = load_checkpoint(found[-1])
        settings = settings.resumed(stored_settings(meta), found[-1]).resolved()
        splits = {name: read_tsv(run_dir / f"{name}.tsv", may_be_empty=True) for name in ("train", "valid", "test")}
        config = TransformerConfig(**meta["config"])
        run = Run(settings, config, tokenizer_from_json(meta["tokenizer"]), splits, states=states)
        run.step, run.epoch, run.position = meta["step"], meta["epoch"], meta["position"]
        run.seconds, run.resumed_from = meta.get("train_seconds", 0.0), found[-1]
        return run
    settings = settings.resolved()
    splits = prepare_data(settings)
    # like sentencepiece's input_sentence_size: BPE from an even sample of the training pairs, which is enough to
    # find the frequent pieces and keeps its cost (which grows faster than the text) small
    sample = even_sample(splits["train"], settings.bpe_pairs)
    tokenizer = train_tokenizer([t for pair in sample for t in pair], settings.vocab_size, settings.pre_tokenizer)
    run = Run(settings, model_config(settings, tokenizer.get_vocab_size()), tokenizer, splits)
    if procs.master:
        checkpoint_dir(run_dir).mkdir(parents=True, exist_ok=True)
        for name, pairs in splits.items():
            write_tsv(run_dir / f"{name}.tsv", pairs)
        (run_dir / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    return run


def build(run: Run, device: torch.device, procs: Processes):
    """The model (wrapped for data parallelism under torchrun), Adam and the schedule, from the checkpoint's states
    when the run resumes."""
    settings = run.settings
    torch.manual_seed(settings.seed)
    model = Transformer(run.config).to(device=device, dtype=getattr(torch, settings.dtype))
    optimizer, _ = make_optimizer(model, run.config, amsgrad=True)  # see transformer.py, deviation 5
    scheduler = make_scheduler(optimizer, run.config, settings.steps, settings.cooldown)
    if run.states is not None:
        model.load_state_dict(run.states["model"])
        optimizer.load_state_dict(run.states["optimizer"])
        scheduler.load_state_dict(run.states["scheduler"])
        torch.set_rng_state(run.states["rng"]["torch"])
        if device.type == "cuda" and "cuda" in run.states["rng"]:
            torch.cuda.set_rng_state(run.states["rng"]["cuda"])  # dropout draws on the GPU there
    # the saved groups say how the run that wrote them stepped, not how this one does
    fuse_adam(optimizer, settings.precision == "bf16" and device.type in ("cpu", "cuda"))
    trained = model
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # it sums each gradient over the ranks and divides by their number (see train_step); the only buffer is the
        # fixed positional encoding, so there is nothing to send before every forward
        ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return model, trained, optimizer, scheduler


def save(run: Run, model, optimizer, scheduler, procs: Processes, device: torch.device) -> Path:
    """A checkpoint of where training stands; rank 0 writes it and drops all but the last --keep."""
    run_dir = Path(run.settings.out)
    path = checkpoint_dir(run_dir) / f"step-{run.step:07d}.pt"
    if procs.master:
        s = run.settings
        meta = {"settings": s.stored(), "config": asdict(run.config), "tokenizer": run.tokenizer.to_str()}
        meta |= {"step": run.step, "epoch": run.epoch, "position": run.position, "train_seconds": run.seconds}
        meta |= {"seed": s.seed, "dtype": s.dtype, "precision": s.precision, "batch_tokens": s.batch_tokens}
        meta |= {"pool": s.pool}
        rng = {"torch": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {})
        states = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        save_checkpoint(path, meta, states | {"scheduler": scheduler.state_dict(), "rng": rng})
        for old in checkpoints(run_dir)[: -s.keep]:
            old.unlink()
    if procs.world > 1:
        dist.barrier()  # every rank resumes from the same file, so none runs ahead of its writing
    return path


# -----------------------------------------------------------------------------
# train
# -----------------------------------------------------------------------------


def train(settings: TrainSettings, console: Console) -> int:
    procs, device = start_processes(settings.device)
    try:
        return train_run(settings, console, procs, device)
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train_run(settings: TrainSettings, console: Console, procs: Processes, device: torch.device) -> int:
    say = console.print if procs.master else (lambda *a, **k: None)
    run = start_run(settings, procs)
    settings = run.settings = replace(run.settings, precision=precision_for(run.settings, device, say))
    train_examples, dropped = make_examples(run.tokenizer, run.splits["train"], run.config.max_len)
    valid_examples, _ = make_examples(run.tokenizer, run.splits["valid"], run.config.max_len)
    if dropped:
        say(f"[yellow]left out {dropped} training pairs longer than max_len={run.config.max_len} tokens[/]")
    if not train_examples:
        raise UserError(f"every training pair is longer than max_len={run.config.max_len} tokens")
    if (unknown := unknown_share(train_examples)) > UNKNOWN_WARNING:
        say(f"[yellow]{100 * unknown:.2f}% of the training pieces are <unk>: learn the BPE from more --bpe-pairs[/]")
    agree(
        procs,
        "the checkpoint to resume from, the vocabulary or the training data",
        run.resumed_from.name if run.resumed_from else None,
        run.tokenizer.to_str(),
        asdict(run.config),
        run.splits["train"],
    )
    model, trained, optimizer, scheduler = build(run, device, procs)
    if run.resumed_from:
        say(f"resuming {settings.out} at step {run.step} of {settings.steps}")
    c = run.config
    say(
        f"[bold]{len(train_examples)}[/] training pairs, {len(valid_examples)} validation; shared BPE vocabulary "
        f"{c.src_vocab_size}; model d_model={c.d_model}, h={c.n_heads}, N={c.n_layers}, d_ff={c.d_ff}, "
        f"P_drop={c.dropout} on {device}" + (f" x {procs.world} processes" if procs.world > 1 else "")
    )
    metrics = Metrics(Path(settings.out) / "metrics.jsonl", procs.master)
    with catching_ctrl_c(procs) as stop:
        parts = (model, trained, optimizer, scheduler)
        report = train_loop(run, parts, train_examples, valid_examples, procs, device, metrics, stop, console)
    path = save(run, model, optimizer, scheduler, procs, device)  # one is always written when training ends
    if report["interrupted"]:
        say(f"[yellow]interrupted at step {run.step}: saved {path}; continue with --resume[/]")
        return 130
    last_valid = validate(model, run, valid_examples, device, procs)
    metrics.log({"step": run.step} | last_valid, final=True)
    say(summary(f"{settings.out}: step {run.step}", report, last_valid, path))
    return 0


def precision_for(settings: TrainSettings, device: torch.device, say) -> str:
    """--precision auto: bf16 where the device computes it natively, fp32 elsewhere; said, with why."""
    if settings.dtype != "float32":
        return "fp32"  # float64 weights are a test's: autocast has nothing to offer them
    precision, why = choose_precision(settings.precision, device)
    say(f"precision {why}")
    return precision


def train_loop(run: Run, parts, examples, valid_examples, procs, device, metrics: Metrics, stop, console) -> dict:
    """Steps until run.step reaches --steps or Ctrl-C: a global batch, its share for this rank, one step; metrics,
    validation and checkpoints on their schedules. Returns what the closing table reports."""
    s, (model, trained, optimizer, scheduler) = run.settings, parts
    batches = length_batches(examples, s.batch_tokens, s.seed, run.epoch, procs.world, s.pool)
    report = {"seconds": 0.0, "tokens": 0, "padding": [], "interrupted": False}
    with training_bar(console, procs.master, s.steps, run.step) as update:
        while run.step < s.steps:
            if all_sum(torch.tensor([float(stop.asked)], device=device), procs).item() > 0:
                report["interrupted"] = True  # every rank stops at the same step
                break
            if run.position >= len(batches):
                run.epoch, run.position = run.epoch + 1, 0
                batches = length_batches(examples, s.batch_tokens, s.seed, run.epoch, procs.world, s.pool)
            tick = time.perf_counter()
            batch = batches[run.position]
            if len(batch) < procs.world:  # every rank holds the same batches, so all of them stop here
                raise UserError(
                    f"a batch of {len(batch)} sentences cannot feed {procs.world} processes: "
                    "give more training pairs or a larger --batch-tokens"
                )
            if procs.world > 1 and run.config.dropout > 0:
                # Every rank starts from the same seed: left alone, ranks whose shares have the same shape would drop
                # the same units. Seeded from (seed, step, rank), each rank draws its own masks, and a resume draws
                # them again without any random state to restore (on GPUs too).
                torch.manual_seed((s.seed * 1_000_003 + run.step) * procs.world + procs.rank)
            # N processes see the stream one process sees: each takes every N-th sentence of the global batch
            src, tgt = collate([examples[i] for i in batch[procs.rank :: procs.world]], device)
            report["padding"].append(padding_share(src, tgt))
            loss, n_tokens = train_step(trained, run.config, src, tgt, optimizer, scheduler, procs, s.precision)
            run.step, run.position = run.step + 1, run.position + 1
            elapsed = time.perf_counter() - tick  # training only: validation and saving are not counted
            run.seconds, report["seconds"] = run.seconds + elapsed, report["seconds"] + elapsed
            report["tokens"] += n_tokens
            lr, tps = scheduler.get_last_lr()[0], report["tokens"] / max(report["seconds"], 1e-9)
            update(run.step, loss, lr, tps)
            if run.step % s.log_every == 0 or run.step == s.steps:
                record = {"step": run.step, "loss": loss, "lr": lr, "tokens_per_s": tps}
                metrics.log(record | {"padding": report["padding"][-1]})
            if s.eval_every and run.step % s.eval_every == 0 and run.step < s.steps:
                validation(run, model, valid_examples, device, procs, metrics, console)
            if s.save_every and run.step % s.save_every == 0 and run.step < s.steps:
                save(run, model, optimizer, scheduler, procs, device)
    return report


def train_step(
    trained, config: TransformerConfig, src: Tensor, tgt: Tensor, optimizer, scheduler, procs, precision="fp32"
):
    """One step of teacher forcing over this process's share of the global batch. Returns (the global mean loss,
    the global number of target tokens). In bf16 the forward runs under autocast and the loss in float32.

    The loss is normalised by the number of target tokens of the whole global batch, all-reduced: ranks hold
    different token counts, and the mean of per-rank means weights a token of a short share more than one of a long
    share, which is a different and wrong gradient. DistributedDataParallel averages the gradients over the ranks,
    so each rank's sum is scaled by world / tokens: the average of those is sum over all tokens / tokens."""
    trained.train()
    labels = tgt[:, 1:]  # (b, T - 1)
    n_global = all_sum((labels != PAD_ID).sum(), procs)
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


def held_out_loss(model, examples, batch_tokens: int, device, precision: str = "fp32") -> float:
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in length_batches(examples, batch_tokens, seed=0, epoch=0):
            src, tgt = collate([examples[i] for i in batch], device)
            labels = tgt[:, 1:]  # (b, T - 1)
            with autocast(device, precision):
                logits = model(src, tgt[:, :-1])  # (b, T - 1, V)
            loss = smoothed_loss_sum(loss_logits(logits, precision), labels, model.config.label_smoothing, PAD_ID)
            total, tokens = total + loss.item(), tokens + int((labels != PAD_ID).sum())
    return total / max(tokens, 1)


def validate(model, run: Run, examples, device, procs: Processes) -> dict:
    """Validation loss, and greedy BLEU and the looping answers on (up to) the first 200 validation pairs, by rank 0
    alone; one looping answer is kept as it was written (what looping looks like at this step)."""
    result = {}
    if procs.master and examples:
        was = model.training
        result["valid_loss"] = held_out_loss(model, examples, run.settings.batch_tokens, device, run.settings.precision)
        some = run.splits["valid"][:200]
        # decoded in float32 whatever --precision (see translation/precision.py, decoding_precision)
        hypotheses = translate_texts(model.eval(), run.tokenizer, [s for s, _ in some], beam=1, alpha=0.0)
        scores = score(hypotheses, [t for _, t in some])
        result["valid_bleu"], result["valid_looping"] = scores["bleu"], scores["looping"]
        looping = [[s, h] for (s, _), h in zip(some, hypotheses, strict=True) if loops(h)]
        result["valid_loop_example"] = looping[0] if looping else None
        model.train(was)
    if procs.world > 1:
        dist.barrier()
    return result


def validation(run: Run, model, examples, device, procs: Processes, metrics: Metrics, console: Console) -> None:
    """A validation during training: logged, and said in one line."""
    result = validate(model, run, examples, device, procs)
    metrics.log({"step": run.step} | result)
    if result:
        console.print(
            f"step {run.step}: validation loss {result['valid_loss']:.3f}, BLEU {result['valid_bleu']:.1f} (greedy), "
            f"{result['valid_looping']} of {min(len(run.splits['valid']), 200)} loop"
        )


# -----------------------------------------------------------------------------
# evaluate, translate, average, fetch, export-web
# -----------------------------------------------------------------------------


def load_for_decoding(settings: DecodeSettings):
    """(checkpoint path, meta, model, tokenizer, device), with the beam checked against the vocabulary."""
    device = device_named(settings.device)
    path, meta, model, tokenizer = load_run(settings.run, device)
    if settings.beam > model.config.tgt_vocab_size:
        raise UserError(f"--beam {settings.beam}: expected at most the vocabulary's {model.config.tgt_vocab_size}")
    return path, meta, model, tokenizer, device


def evaluate(settings: DecodeSettings, console: Console) -> int:
    path, meta, model, tokenizer, device = load_for_decoding(settings)
    pairs = read_pairs(settings.data, settings.src, settings.tgt, "the test data")
    if pairs is None:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        pairs = read_tsv(run_dir / "test.tsv")
    if not pairs:
        raise UserError("the test data holds no sentence pairs")
    if meta.get("averaged"):
        console.print(f"the average of {', '.join(meta['averaged'])} (§6.1)", style="dim")
    start = time.perf_counter()
    with autocast(device, decoding_precision(settings.precision, device)):
        hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs], settings.beam, settings.alpha)
    seconds = time.perf_counter() - start
    result = score(hypotheses, [t for _, t in pairs])
    shown = list(zip(pairs, hypotheses, strict=True))[: settings.examples]
    title = f"held-out examples ({path.name}, beam {settings.beam})"
    evaluation_report(console, title, shown, result, seconds)
    console.print(
        (f"{settings.title}: " if settings.title else "")
        + f"BLEU {result['bleu']:.1f} (sacreBLEU, cased), {result['bleu_lowercase']:.1f} lowercased, "
        f"exact match {100 * result['exact'] / result['n']:.1f}% ({result['exact']}/{result['n']}), "
        f"beam {settings.beam}, after {duration(meta.get('train_seconds', 0.0))} of training",
        soft_wrap=True,
    )
    if settings.json:
        record = result | {"beam": settings.beam, "alpha": settings.alpha}
        Path(settings.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def read_stdin() -> list[str]:
    """The non-blank lines of stdin, strictly UTF-8; a byte-order mark (Notepad, Excel) is not part of the first."""
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"stdin: not UTF-8 (byte {raw[error.start]:#04x} at offset {error.start})") from None
    return [line for line in text.removeprefix("\ufeff").splitlines() if line.strip()]


def translate(settings: DecodeSettings, console: Console) -> int:
    _, _, model, tokenizer, device = load_for_decoding(settings)
    texts = list(settings.text) or read_stdin()
    if not texts:
        raise UserError("nothing to translate: give sentences as arguments, or one per line on stdin")
    _, too_long = source_ids(tokenizer, texts, model.config.max_len)
    if too_long:  # translate_texts keeps the first max_len tokens of such a sentence
        what = "1 sentence is" if too_long == 1 else f"{too_long} sentences are"
        print(f"{PROG}: {what} longer than max_len={model.config.max_len} tokens and cut to it", file=sys.stderr)
    with autocast(device, decoding_precision(settings.precision, device)):
        translations = translate_texts(model, tokenizer, texts, settings.beam, settings.alpha)
    for translation in translations:
        print(translation)
    if settings.plot:
        plot_alignment(model, tokenizer, texts[0], settings.beam, settings.alpha, Path(settings.plot))
        console.print(f"cross-attention of {texts[0]!r} drawn to {settings.plot}", style="dim")
    return 0


def average(settings: AverageSettings, console: Console) -> int:
    """§6.1: the base models use "a single model obtained by averaging the last 5 checkpoints"."""
    run_dir = Path(settings.run)
    found = checkpoints(run_dir) if run_dir.is_dir() else []
    if not found:
        raise UserError(f"{run_dir}: no checkpoints to average")
    if settings.last > len(found):
        raise UserError(f"--last {settings.last} asks for more checkpoints than {run_dir} keeps ({len(found)})")
    chosen = found[-settings.last :]
    loaded = [load_checkpoint(p) for p in chosen]
    if any(meta["config"] != loaded[-1][0]["config"] for meta, _ in loaded):
        raise UserError(f"the last {settings.last} checkpoints of {run_dir} have different configs")
    weights = {}
    for name, tensor in loaded[-1][1]["model"].items():
        stack = torch.stack([states["model"][name].double() for _, states in loaded])  # (K, ...)
        weights[name] = stack.mean(dim=0).to(tensor.dtype)
    meta = dict(loaded[-1][0]) | {"averaged": [p.name for p in chosen]}
    save_checkpoint(Path(settings.out), meta, {"model": weights})
    console.print(f"averaged {', '.join(p.name for p in chosen)} into {settings.out}")
    return 0


def fetch(settings: FetchSettings, console: Console) -> int:
    out = settings.out
    for path in fetch_multi30k(out, settings.source):
        console.print(f"{path}  {sum(1 for _ in path.open('rb')):,} lines")
    console.print(
        f"Multi30k in {out}: train with  --src {out}/train.de --tgt {out}/train.en "
        f"--valid {out}/val.de {out}/val.en --test {out}/test2016.de {out}/test2016.en",
        soft_wrap=True,
    )
    return 0


def export_web(settings: ExportSettings, console: Console) -> int:
    """The page that runs the model in a browser, from a run's averaged.pt (else its latest checkpoint)."""
    from translation.web import export_web as write_page

    where = Path(settings.run)
    checkpoint = where / "averaged.pt" if (where / "averaged.pt").is_file() else resolve_checkpoint(where)
    info = write_page(checkpoint, Path(settings.out), half=settings.half)
    console.print(
        f"{checkpoint} -> {settings.out}/index.html ({info.get('megabytes', 0):.1f} MB): open it in a browser"
    )
    return 0


# -----------------------------------------------------------------------------
# The command line, and the boundary between the user's errors and ours
# -----------------------------------------------------------------------------

COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "translate": translate,
    "average": average,
    "fetch": fetch,
    "export-web": export_web,
}


def main(argv: list[str] | None = None) -> int:
    """Runs one command. What the user's input or machine caused (UserError, and an OSError such as a full disk
    or a folder that cannot be written) is one line on stderr and exit status 2; anything else is a bug of ours
    and keeps its traceback."""
    try:
        name, settings = parse_command_line(sys.argv[1:] if argv is None else argv, RECIPES)
        if getattr(settings, "threads", None):
            torch.set_num_threads(settings.threads)
        console = Console(quiet=getattr(settings, "quiet", False))
        return COMMANDS[name](settings, console)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG}: error: {where}{error.strerror or error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
