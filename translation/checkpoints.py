"""Checkpoints: atomic, complete, and loaded without unpickling code; and the model and tokenizer read back.

A checkpoint is one file holding a dict of tensors and one JSON string (the run's settings, its model config, its
tokenizer, where training stood). torch.load(weights_only=True) reads it: a file crafted to run code on load is
refused before anything runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from transformer import Transformer, TransformerConfig
from translation.batches import tokenizer_from_json
from translation.corpora import UserError

PROG = "translate.py"
CHECKPOINT_FORMAT = 1


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
