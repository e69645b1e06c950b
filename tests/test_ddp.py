"""Data-parallel training under torchrun computes what one process computes (issue 9).

Two processes launched by `python -m torch.distributed.run --standalone --nproc-per-node 2 translate.py train`
(gloo on the CPU, loopback only) take every other sentence of each global batch; one process takes the whole batch.
On batches whose two halves hold different numbers of target tokens:
- float64: the same parameters after 5 steps (<= 1e-10), and a 2-process resume continues exactly as one process.
- float32: the same logits on a fixed batch (<= 1e-4); not the same parameters, because the bias of W^K gets a
  gradient that is zero in exact arithmetic and so only rounding noise, which Adam (eps = 1e-9) turns into full-size
  steps of random sign (see the README, "When one machine is not enough"). The failure message measures it.
- a loss averaged per rank gives another gradient (in-process: the test that would have caught that bug).
- a rank that raises ends the whole job with a non-zero status within seconds; that run trains with dropout, its
  ranks draw their masks from different random states, and it resumes from its checkpoints exactly.
- ranks that read other data stop with one clear error.

The launches are slow to start (each process imports torch), so one module fixture starts them all, each as
soon as what it resumes is there, several at a time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import transformer as tf
import translate as tr
from translation import batches as tb
from translation import corpora

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
STEPS, RESUME_AT, FAIL_AFTER = 5, 3, 3
# tiny model, dropout 0, a short warm-up so that 5 steps move the weights by more than rounding
MODEL = "--d-model 16 --heads 2 --layers 1 --d-ff 32 --dropout 0 --warmup 10 --vocab-size 60 --batch-tokens 160"
HUNG_AFTER = 120  # seconds: a launch still running by then is a hang (the collective timeout is 30 minutes)

# Rank 1 raises after step FAIL_AFTER, and each rank notes the random state it starts each step from (dropout draws
# from it); written to the test's directory and launched by torchrun in place of translate.py, so translate.py
# carries no test hook.
FAILING_RANK = """
import hashlib, os, sys, time
sys.path.insert(0, {root!r})
import torch
import translate

step = 0
real_step = translate.train_step

def train_step(*args, **kwargs):
    global step
    with open({stamp!r} + ".rng" + os.environ["RANK"], "a") as f:
        f.write(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest() + "\\n")
    result = real_step(*args, **kwargs)
    step += 1
    if os.environ["RANK"] == "1" and step == {fail_after}:
        with open({stamp!r}, "w") as f:
            f.write(repr(time.time()))
        raise RuntimeError("rank 1 fails on purpose after step {fail_after}")
    return result

translate.train_step = train_step
sys.exit(translate.main(sys.argv[1:]))
"""


def write_data(where: Path) -> tuple[Path, Path]:
    """80 numbers of 1 to 6 digits for training, 16 for validation and test, as TSV files."""
    rng = random.Random(9)
    numbers = [rng.randint(0, 10 ** rng.randint(1, 6) - 1) for _ in range(200)]
    pairs = list(dict.fromkeys((corpora.german_number(n), corpora.english_number(n)) for n in numbers))
    train, held = where / "train.tsv", where / "held.tsv"
    tr.write_tsv(train, pairs[:80])
    tr.write_tsv(held, pairs[80:96])
    return train, held


def train_args(out: Path, train: Path, held: Path, *more: str) -> list[str]:
    data = f"--data {train} --valid {held} --test {held} --threads 1 --steps {STEPS}"
    return ["train", "--out", str(out), *data.split(), *MODEL.split(), *more]


def launch(argv: list[str], script: str = "translate.py") -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")  # rich wraps at 200
    return subprocess.Popen(
        [*TORCHRUN, script, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> tuple[int, str, float]:
    """(exit status, output, the time it ended)."""
    try:
        output, _ = process.communicate(timeout=HUNG_AFTER)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"a torchrun launch was still running after {HUNG_AFTER} s: it hangs\n{output[-3000:]}")
    return process.returncode, output, time.time()


def one_process(argv: list[str]) -> None:
    assert tr.main(argv) == 0, f"one-process training failed: {argv}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("ddp")
    train, held = write_data(where)
    f64 = ("--dtype", "float64")
    # first, together: two processes in float64 (a checkpoint every step, for the resume), in float32, and a run
    # whose rank 1 raises (with dropout and a checkpoint every step, to resume it after the crash); meanwhile the
    # one-process runs, in this process
    ddp64 = launch(train_args(where / "ddp64", train, held, *f64, "--save-every", "1"))
    ddp32 = launch(train_args(where / "ddp32", train, held))
    stamp = where / "raised_at"
    failing_script = where / "failing_rank.py"
    failing_script.write_text(FAILING_RANK.format(root=str(ROOT), fail_after=FAIL_AFTER, stamp=str(stamp)))
    crashing = train_args(where / "failing", train, held, "--steps", "50", "--dropout", "0.1", "--save-every", "1")
    failing = launch(crashing, script=str(failing_script))
    one_process(train_args(where / "one64", train, held, *f64))
    one_process(train_args(where / "one32", train, held))
    done = {"failing": finish(failing)}
    # then, as soon as it has crashed: resume it from its step 1 to step 2, under two processes, with dropout
    after_crash = where / "after_crash"
    shutil.copytree(where / "failing", after_crash)
    for later in tr.checkpoints(after_crash)[1:]:
        later.unlink()
    assert tr.checkpoints(after_crash)[-1].name == "step-0000001.pt", "the crashed run saved no step 1"
    # (--batch-tokens is not kept in the checkpoint: a resume must repeat it to see the same batches)
    again = ["train", "--out", str(after_crash), "--resume", "--steps", "2", "--threads", "1", "--batch-tokens", "160"]
    resume_crashed = launch(again)
    # and as soon as the float64 run is done: resume it from step RESUME_AT under two processes, same flags
    done["ddp64"] = finish(ddp64)
    resumed = where / "resumed64"
    shutil.copytree(where / "ddp64", resumed)
    for later in tr.checkpoints(resumed)[RESUME_AT:]:
        later.unlink()
    assert tr.checkpoints(resumed)[-1].name == f"step-{RESUME_AT:07d}.pt"
    resume = launch(train_args(resumed, train, held, "--resume"))
    done |= {"ddp32": finish(ddp32), "after_crash": finish(resume_crashed), "resumed64": finish(resume)}
    for name in ("ddp64", "ddp32", "resumed64", "after_crash"):
        status, output, _ = done[name]
        assert status == 0, f"two-process run {name} failed with status {status}:\n{output[-3000:]}"
    return {"where": where, "train": train, "done": done, "stamp": stamp}


def parameters(run: Path) -> dict[str, torch.Tensor]:
    return dict(tr.load_model(run).named_parameters())


def differences(a: Path, b: Path) -> dict[str, float]:
    pa, pb = parameters(a), parameters(b)
    return {name: (pa[name].double() - pb[name].double()).abs().max().item() for name in pa}


def test_the_two_ranks_hold_different_numbers_of_target_tokens(runs):
    """The precondition of every equality below: with equal token counts a per-rank mean would be right too.
    And the one process sees the same batches as the two, so the comparison is of the same stream."""
    tokenizer = tr.load_tokenizer(runs["where"] / "one64")
    examples, _ = tr.make_examples(tokenizer, tr.read_tsv(runs["where"] / "one64" / "train.tsv"), 128)
    batches = tr.length_batches(examples, 160, seed=0, epoch=0, min_rows=2)
    alone = tr.length_batches(examples, 160, seed=0, epoch=0)
    assert batches[:STEPS] == alone[:STEPS], "one process would see other batches"
    assert len(batches) >= STEPS, "the test data is too small for 5 steps in one epoch"
    for step, batch in enumerate(batches[:STEPS], 1):
        counts = [sum(len(examples[i].tgt) - 1 for i in batch[rank::2]) for rank in (0, 1)]
        assert counts[0] != counts[1], f"step {step}: both ranks hold {counts[0]} target tokens; pick other data"


def test_two_processes_train_the_same_float64_parameters_as_one(runs):
    gaps = differences(runs["where"] / "ddp64", runs["where"] / "one64")
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= 1e-10, f"after {STEPS} steps {worst} differs by {gaps[worst]:.2e} between 2 and 1 processes"
    assert tr.resolve_checkpoint(runs["where"] / "ddp64").name == f"step-{STEPS:07d}.pt"


def test_two_processes_give_the_same_float32_logits_as_one(runs):
    two, one = tr.load_model(runs["where"] / "ddp32"), tr.load_model(runs["where"] / "one32")
    tokenizer = tr.load_tokenizer(runs["where"] / "one32")
    pairs = tr.read_tsv(runs["where"] / "one32" / "valid.tsv")
    src, tgt = tr.collate(tr.make_examples(tokenizer, pairs, 128)[0], torch.device("cpu"))  # (B, S), (B, T)
    with torch.no_grad():
        gap = (two(src, tgt[:, :-1]) - one(src, tgt[:, :-1])).abs().max().item()  # (B, T - 1, V)
    gaps = differences(runs["where"] / "ddp32", runs["where"] / "one32")
    key_bias = max(v for k, v in gaps.items() if k.endswith("w_k.bias"))
    rest = max(v for k, v in gaps.items() if not k.endswith("w_k.bias"))
    measured = (
        f"float32 logits differ by {gap:.1e} between 2 and 1 processes; the parameters differ by {key_bias:.1e} "
        f"in the biases of W^K (rounding noise that Adam amplifies, harmless) and by {rest:.1e} elsewhere"
    )
    print(measured)  # pytest -s -k float32 shows it
    assert gap <= 1e-4, measured


def test_a_resume_under_two_processes_continues_exactly_as_one_process(runs):
    status, output, _ = runs["done"]["resumed64"]
    assert f"resuming {runs['where'] / 'resumed64'} at step {RESUME_AT} of {STEPS}" in " ".join(output.split())
    gaps = differences(runs["where"] / "resumed64", runs["where"] / "one64")
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= 1e-10, (
        f"{RESUME_AT} steps and a resume to {STEPS} under 2 processes differ from {STEPS} steps in one process "
        f"by {gaps[worst]:.2e} in {worst}"
    )


def test_rank_0_alone_writes_the_progress_metrics_and_checkpoints(runs):
    status, output, _ = runs["done"]["ddp64"]
    assert output.count("training pairs") == 1, "the opening line was printed by more than one rank"
    assert " ".join(output.split()).count(f"step {STEPS}") == 1, "the summary table was printed by more than one rank"
    run, alone = runs["where"] / "ddp64", runs["where"] / "one64"
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line).get("step") for line in (alone / "metrics.jsonl").read_text().splitlines()]
    assert [p.name for p in tr.checkpoints(run)] == [f"step-{s:07d}.pt" for s in range(1, STEPS + 1)]
    assert not list(tr.checkpoint_dir(run).glob(".*tmp*")), "a temporary checkpoint file was left behind"


def test_a_rank_that_raises_ends_the_job_with_a_failure(runs):
    status, output, ended = runs["done"]["failing"]
    assert status != 0, f"rank 1 raised, yet the job exited with status 0:\n{output[-2000:]}"
    assert "rank 1 fails on purpose" in output, f"the failing rank's error is not in the output:\n{output[-2000:]}"
    assert runs["stamp"].exists(), "rank 1 never reached the step where it raises"
    waited = ended - float(runs["stamp"].read_text())
    assert waited < 30, f"the job took {waited:.0f} s to end after rank 1 raised: something waits on the dead rank"
    states = [Path(f"{runs['stamp']}.rng{rank}").read_text().split() for rank in (0, 1)]
    assert len(states[1]) == FAIL_AFTER, "rank 1 did not log each of its steps"
    same = [step for step, (a, b) in enumerate(zip(*states, strict=False), 1) if a == b]
    assert not same, f"at steps {same} both ranks drew their dropout masks from the same random state"
    saved = [p.name for p in tr.checkpoints(runs["where"] / "failing")]
    assert saved[:2] == ["step-0000001.pt", "step-0000002.pt"] and len(saved) <= FAIL_AFTER, saved
    for path in tr.checkpoint_dir(runs["where"] / "failing").iterdir():  # a kill mid-save leaves only a .tmp file
        assert path.name.startswith(".") or tr.load_model(path) is not None


def test_a_crashed_two_process_run_with_dropout_resumes_exactly(runs):
    """Its checkpoint of step 1, resumed to step 2 under two processes, gives the weights it saved at step 2 before
    rank 1 raised: every rank draws the same dropout masks again (they are seeded by seed, step and rank)."""
    gaps = differences(runs["where"] / "after_crash", runs["where"] / "failing" / "checkpoints" / "step-0000002.pt")
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] == 0.0, f"the resumed step differs by {gaps[worst]:.2e} in {worst}: other dropout masks?"


class NoStep:
    """Stands in for the optimiser and scheduler: keeps the gradients train_step leaves behind."""

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        pass

    def get_last_lr(self):
        return [0.0]


def test_a_per_rank_mean_loss_gives_another_gradient_and_train_step_does_not(monkeypatch):
    """One batch, split between two ranks that hold different numbers of target tokens. DDP averages the ranks'
    gradients. Averaging per-rank mean losses weights a token of the shorter half more: another gradient. train_step
    (with all_sum standing in for the all-reduce) gives the gradient of the whole batch."""
    torch.manual_seed(0)
    config = tr.TransformerConfig(40, 40, d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)
    model = tr.Transformer(config).double()
    rng = random.Random(0)
    rows = [tb.Example([rng.randint(4, 39) for _ in range(rng.randint(2, 9))] + [tb.EOS_ID], []) for _ in range(6)]
    for row in rows:
        row.tgt = [tb.BOS_ID, *(rng.randint(4, 39) for _ in range(rng.randint(1, 11))), tb.EOS_ID]
    halves = [rows[0::2], rows[1::2]]
    counts = [sum(len(e.tgt) - 1 for e in half) for half in halves]
    assert counts[0] != counts[1], "the two halves must hold different numbers of target tokens"

    def gradient(loss_of) -> torch.Tensor:
        model.zero_grad()
        loss_of().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def mean_loss(examples):
        src, tgt = tr.collate(examples, torch.device("cpu"))  # (b, S), (b, T)
        return tf.label_smoothed_loss(model(src, tgt[:, :-1]), tgt[:, 1:], config.label_smoothing, tr.PAD_ID)

    whole = gradient(lambda: mean_loss(rows))
    per_rank_mean = sum(gradient(lambda h=h: mean_loss(h)) for h in halves) / 2  # what DDP makes of per-rank means

    # all_sum over two ranks of the token count is the count of the whole batch; the loss it sums is only reported
    total = sum(counts)
    monkeypatch.setattr(tr, "all_sum", lambda v, procs: torch.tensor(total) if not v.is_floating_point() else v)
    ours = []
    for rank, half in enumerate(halves):
        src, tgt = tr.collate(half, torch.device("cpu"))
        model.zero_grad()
        tr.train_step(model, config, src, tgt, NoStep(), NoStep(), tr.Processes(rank, 2))
        ours.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    token_normalised = sum(ours) / 2  # DDP's average of the two ranks' gradients

    wrong = ((per_rank_mean - whole).norm() / whole.norm()).item()
    right = ((token_normalised - whole).norm() / whole.norm()).item()
    assert wrong > 1e-2, f"the per-rank mean should give another gradient here, but differs by only {wrong:.1e}"
    assert right < 1e-12, f"train_step's gradient differs from the whole batch's by {right:.1e} (relative)"


def test_ranks_that_see_other_data_stop_with_a_clear_error(monkeypatch):
    """agree() compares a digest of what each rank read; here rank 1 is made to report another one (in-process: the
    collective is stood in for, the comparison is what is tested)."""

    def no_collective(seen, digest):
        raise AssertionError("a single process must not call a collective")

    def gather(seen, digest):
        seen[:] = [digest, "another digest"]

    monkeypatch.setattr(tr.dist, "all_gather_object", no_collective)
    tr.agree(tr.Processes(0, 1), "the data", "anything")
    monkeypatch.setattr(tr.dist, "all_gather_object", gather)
    with pytest.raises(tr.UserError, match="rank 1 disagrees with rank 0 on the data"):
        tr.agree(tr.Processes(0, 2), "the data", [("eins", "one")])

    def same(seen, digest):
        seen[:] = [digest, digest]

    monkeypatch.setattr(tr.dist, "all_gather_object", same)
    tr.agree(tr.Processes(1, 2), "the data", [("eins", "one")])
