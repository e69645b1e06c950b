"""Build a broken variant of transformer.py from its current text, and show it as a diff."""

from __future__ import annotations

import difflib
import linecache
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

from .registry import PITFALLS, Pitfall

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER_PATH = ROOT / "transformer.py"

# Pitfalls outside PITFALLS that load_variant may resolve while they are registered (the harness's
# self-test registers a variant turned back into correct code, to prove it is reported as uncaught).
_extra: dict[str, Pitfall] = {}


class PitfallDriftError(RuntimeError):
    """A pitfall's snippet no longer occurs exactly once in transformer.py: the pitfall needs updating."""


def find_pitfall(name: str) -> Pitfall:
    """The pitfall with this name (from PITFALLS, or registered by the harness), else a ValueError listing them."""
    for pitfall in PITFALLS:
        if pitfall.name == name:
            return pitfall
    if name in _extra:
        return _extra[name]
    raise ValueError(f"no pitfall {name!r}; the pitfalls are {', '.join(p.name for p in PITFALLS)}")


@contextmanager
def registered(pitfall: Pitfall) -> Iterator[None]:
    """Let load_variant(pitfall.name) find a pitfall that is not in PITFALLS, inside this block."""
    if any(p.name == pitfall.name for p in PITFALLS):
        raise ValueError(f"pitfall {pitfall.name!r} is already in PITFALLS")
    _extra[pitfall.name] = pitfall
    try:
        yield
    finally:
        del _extra[pitfall.name]


def apply_edits(source: str, pitfall: Pitfall) -> str:
    """transformer.py's text with the pitfall's substitutions made, each checked to match exactly once."""
    for i, edit in enumerate(pitfall.edits, start=1):
        count = source.count(edit.old)
        if count != 1:
            where = "no longer occurs" if count == 0 else f"occurs {count} times"
            raise PitfallDriftError(
                f"pitfall {pitfall.name}: snippet {i} of {len(pitfall.edits)} {where} in transformer.py "
                f"(it must occur exactly once); transformer.py has changed, so update the pitfall's edits in "
                f"debug_pitfalls/registry.py. The snippet: {edit.old!r}"
            )
        source = source.replace(edit.old, edit.new)
    return source


def variant_source(pitfall: Pitfall | str) -> str:
    """The source text of the broken variant, built from the current transformer.py."""
    pitfall = find_pitfall(pitfall) if isinstance(pitfall, str) else pitfall
    return apply_edits(TRANSFORMER_PATH.read_text(encoding="utf-8"), pitfall)


@cache
def build_module(label: str, source: str) -> ModuleType:
    """Import source text as a fresh module, once per (label, source): a pitfall's variant, or (tools/live.py) a
    stage with blanks. Tracebacks show its lines under the file name transformer[label].py."""
    name = f"transformer_pitfall_{label}"
    filename = f"transformer[{label}].py"  # what tracebacks show; linecache serves its lines
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = ModuleType(name, f"transformer.py as {label}")
    module.__file__ = filename
    sys.modules[name] = module  # dataclasses look their module up in sys.modules while the class is built
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def build_variant(pitfall: Pitfall) -> ModuleType:
    """Import the pitfall's variant of the current transformer.py as a fresh module (cached per source text)."""
    return build_module(pitfall.name, variant_source(pitfall))


def load_variant(name: str) -> ModuleType:
    """A module with transformer.py's public API and exactly the named pitfall's bug."""
    return build_variant(find_pitfall(name))


def variant_diff(name: str, context: int = 2) -> str:
    """A unified diff of transformer.py against the named pitfall's variant."""
    pitfall = find_pitfall(name)
    original = TRANSFORMER_PATH.read_text(encoding="utf-8")
    broken = apply_edits(original, pitfall)
    lines = difflib.unified_diff(
        original.splitlines(keepends=True),
        broken.splitlines(keepends=True),
        fromfile="transformer.py",
        tofile=f"transformer.py, with the pitfall {pitfall.name}",
        n=context,
    )
    return "".join(lines)
