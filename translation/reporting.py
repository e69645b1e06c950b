"""What a run shows and writes as it goes: the progress bar, metrics.jsonl, and the tables that close a training run
and an evaluation."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class Metrics:
    """metrics.jsonl, one JSON record a line, written by rank 0 and flushed at once (a killed run keeps them)."""

    def __init__(self, path: Path, master: bool):
        self.file = open(path, "a", encoding="utf-8") if master else None

    def log(self, record: dict, final: bool = False) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if final:
                self.file.close()


def training_bar(console: Console, master: bool, steps: int, done: int):
    """rich's bar with the loss, the rate and tokens per second, on rank 0 only; yields update(step, loss, lr, tps)."""
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not master,
    )

    @contextlib.contextmanager
    def shown():
        with progress:
            bar = progress.add_task("train", total=steps, completed=done, loss=float("nan"), lr=0.0, tps=0.0)

            def update(step: int, loss: float, lr: float, tps: float) -> None:
                progress.update(bar, completed=step, loss=loss, lr=lr, tps=tps)

            yield update

    return shown()


def summary(title: str, report: dict, last_valid: dict, path: Path) -> Table:
    """The table a finished run ends with."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    seconds, padding = report["seconds"], report["padding"]
    rows = [
        ("training time this run", f"{seconds:.1f} s"),
        ("tokens per second", f"{report['tokens'] / max(seconds, 1e-9):,.0f}"),
        ("padding share of a batch (mean)", f"{100 * sum(padding) / max(len(padding), 1):.1f}%"),
        ("validation loss", f"{last_valid['valid_loss']:.3f}" if last_valid else "no validation pairs"),
        ("validation BLEU (greedy)", f"{last_valid['valid_bleu']:.1f}" if last_valid else "no validation pairs"),
        ("checkpoint", str(path)),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def evaluation_report(console: Console, title: str, shown: list, result: dict, seconds: float) -> None:
    """Examples as a table (source, reference, translation, right or not), then the scores with their signatures."""
    table = Table(title=title)
    for column in ("source", "reference", "translation", ""):
        table.add_column(column)
    for (s, t), h in shown:
        table.add_row(s, t, h, "[green]✓[/]" if h == t else "[red]✗[/]")
    console.print(table)
    console.print(f"sacreBLEU {result['bleu_signature']}")
    console.print(f"sacreBLEU lowercased {result['bleu_lowercase_signature']}")
    console.print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")
    if result["bleu_meaningless"]:
        console.print("[yellow]most references are one word: BLEU counts word 4-grams, so read chrF and exact match[/]")
    console.print(f"decoded {result['n']} sentences in {seconds:.1f} s; {result['looping']} of them loop", style="dim")
