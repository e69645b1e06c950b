"""Processes: one, or many under torchrun (torch.distributed). Plain `python translate.py` is a world of one and
pays nothing; torchrun sets WORLD_SIZE, RANK and LOCAL_RANK, and the same command trains data-parallel."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from transformer import pick_device
from translation.corpora import UserError


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


class StopFlag:
    asked = False


class catching_ctrl_c:
    """Ctrl-C only raises a flag, and training stops between two steps: an interrupt inside a step would save the
    weights of one step under the number of the step before. The handler found is put back afterwards."""

    def __init__(self, procs: Processes):
        self.procs, self.flag = procs, StopFlag()

    def __enter__(self) -> StopFlag:
        self.previous = signal.signal(signal.SIGINT, self.ask)
        return self.flag

    def ask(self, signum, frame) -> None:
        self.flag.asked = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)
        if self.flag.asked and self.procs.world > 1:
            # torchrun's agent passes a Ctrl-C on as a second SIGINT: the save must not be cut short by that echo
            signal.signal(signal.SIGINT, signal.SIG_IGN)
