"""The stage list: the one place every tool (Makefile, tests, README, slides, presenter) reads it from."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

STAGES_DIR = Path(__file__).resolve().parent
# The title of the dashed comment header that opens a stage's own demo block (not part of transformer.py).
DEMO_TITLE = "# Demo of this stage (not part of transformer.py)"


def import_file(path: Path, name: str) -> ModuleType:
    """Import a Python file as module `name` (stage files start with digits, so no plain import); once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Stage:
    number: int
    slug: str
    title: str  # as in the stage's section header in transformer.py
    paper: str  # the section or equation of the paper it implements
    summary: str  # one sentence: what the stage adds
    bonus: bool = False  # beyond the paper: lives in stages/bonus/

    @property
    def path(self) -> Path:
        folder = STAGES_DIR / "bonus" if self.bonus else STAGES_DIR
        return folder / f"{self.number:02d}_{self.slug}.py"

    def load(self) -> ModuleType:
        """The stage file, imported as a module."""
        return import_file(self.path, f"stage_{self.number:02d}_{self.slug}")


STAGES: tuple[Stage, ...] = (
    Stage(1, "embeddings", "Embeddings", "§3.4", "Token ids become learned vectors, scaled by sqrt(d_model)."),
    Stage(
        2,
        "positional_encoding",
        "Positional encoding",
        "§3.5",
        "Fixed sines and cosines tell the model where each token is.",
    ),
    Stage(
        3,
        "attention",
        "Scaled dot-product attention",
        "§3.2.1, Eq. (1)",
        "Each query takes a softmax-weighted average of the values, scored against the keys.",
    ),
    Stage(
        4,
        "multi_head_attention",
        "Multi-head attention",
        "§3.2.2",
        "h attention heads run side by side on learned projections and are merged back.",
    ),
    Stage(
        5,
        "feed_forward",
        "Position-wise feed-forward network",
        "§3.3, Eq. (2)",
        "Two linear maps with a ReLU between them, applied to every position alone.",
    ),
    Stage(
        6,
        "add_and_norm",
        "Residual connection, dropout and layer normalisation",
        "§3.1, §5.4",
        "Every sub-layer is wrapped as LayerNorm(x + Dropout(Sublayer(x))), post-LN.",
    ),
    Stage(
        7,
        "encoder",
        "Encoder",
        "§3.1",
        "Self-attention and feed-forward make an encoder layer; N of them make the encoder.",
    ),
    Stage(
        8,
        "masks",
        "Masks: padding and subsequent positions",
        "§3.2.3",
        "Boolean masks keep attention off padding and, in the decoder, off the future.",
    ),
    Stage(
        9,
        "decoder",
        "Decoder",
        "§3.1",
        "Masked self-attention, attention over the encoder output and feed-forward make a decoder layer.",
    ),
    Stage(
        10,
        "transformer",
        "The full encoder-decoder, with shared embeddings",
        "§3, §3.4",
        "Embeddings, encoder, decoder and a weight-tied output projection make the whole model.",
    ),
    Stage(
        11,
        "training",
        "Training: label smoothing, Adam and the warm-up schedule",
        "§5.3, §5.4, Eq. (3)",
        "A label-smoothed loss, Adam and the warm-up schedule teach the model a toy task.",
    ),
    Stage(
        12,
        "decoding",
        "Decoding: greedy and beam search, and the demo",
        "§3, §6.1",
        "Greedy decoding and beam search with a length penalty write answers token by token; this stage is transformer.py.",
    ),
    Stage(
        13,
        "fused_attention",
        "Fused attention",
        "beyond the paper (Eq. (1))",
        "Multi-head attention calls F.scaled_dot_product_attention, one fused kernel with the same masks and outputs.",
        bonus=True,
    ),
    Stage(
        14,
        "kv_cache",
        "Key/value cache for greedy decoding and beam search",
        "beyond the paper (§3.2.3)",
        "Decoding keeps each layer's keys and values, so every step runs the decoder on the new token only; "
        "beam search reorders the cache with its hypotheses, and finished sentences leave the batch.",
        bonus=True,
    ),
    Stage(
        15,
        "pre_ln",
        "Pre-LN: LayerNorm before each sub-layer",
        "beyond the paper (§3.1; Xiong et al., 2020)",
        "Each sub-layer becomes x + Dropout(Sublayer(LayerNorm(x))) and each stack ends in a LayerNorm, "
        "as most later models do.",
        bonus=True,
    ),
)


def get_stage(number: int | str) -> Stage:
    """The stage with this number, or a ValueError that lists the stages."""
    try:
        wanted = int(number)
    except (TypeError, ValueError):
        wanted = None
    for stage in STAGES:
        if stage.number == wanted:
            return stage
    choices = ", ".join(f"{s.number} ({s.slug})" for s in STAGES)
    raise ValueError(f"no stage {number!r}; the stages are {choices}")
