"""Shared fixtures. `tf` is the module under test: transformer.py, a stage, or (for the pitfall harness) a
deliberately broken variant.

- A test marked `@pytest.mark.stage(n)` runs against transformer.py and against every stage file from
  stage n on, because each stage must pass the tests of every component it contains so far. It runs on the
  pre-LN bonus stage 15 too (all components, the LayerNorms moved), unless it is also marked
  `@pytest.mark.post_ln`: a test of the paper's post-LN layout itself.
- A test that takes `tf` without the marker runs against transformer.py only.
- With TRANSFORMER_IMPL=<pitfall name> in the environment, `tf` is that pitfall's variant instead
  (see debug_pitfalls/), so the same tests can judge a broken model.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages.manifest import STAGES, get_stage, import_file  # noqa: E402

# Bonus stages the stage-marked tests run on as well. Stage 15 moves the LayerNorms (pre-LN) and must keep
# every other property; 13 and 14 are checked against transformer.py directly in tests/test_bonus.py.
BONUS_UNDER_TEST = (15,)

# The test models are tiny: one thread is as fast, gives the same numbers on every machine, and does not
# crawl when another process holds the other core.
torch.set_num_threads(1)


@cache
def load_module(path: Path) -> ModuleType:
    """Import a Python file under a unique name: transformer.py as `transformer`, any other file by its stem."""
    return import_file(path, "transformer" if path.name == "transformer.py" else "under_test_" + path.stem)


def implementations(first_stage: int | None, post_ln: bool = False) -> list[tuple[str, Path]]:
    """(id, path) of transformer.py and, when first_stage is given, each existing stage from it on, and the
    bonus stages of BONUS_UNDER_TEST unless the test is of the post-LN layout."""
    found = [("transformer.py", ROOT / "transformer.py")]
    if first_stage is not None:
        for stage in STAGES:
            if not stage.bonus and stage.number >= first_stage and stage.path.exists():
                found.append((f"stage{stage.number:02d}", stage.path))
        if not post_ln:
            found += [(f"stage{n:02d}", get_stage(n).path) for n in BONUS_UNDER_TEST if get_stage(n).path.exists()]
    return found


def pytest_configure(config):
    config.addinivalue_line("markers", "stage(n): the component arrives in stage n; run on every later stage too")
    config.addinivalue_line("markers", "post_ln: a test of the post-LN layout; not run on the pre-LN bonus stage 15")


def pytest_generate_tests(metafunc):
    if "tf" not in metafunc.fixturenames:
        return
    if os.environ.get("TRANSFORMER_IMPL"):
        metafunc.parametrize("tf", [os.environ["TRANSFORMER_IMPL"]], indirect=True, ids=lambda s: s)
        return
    marker = metafunc.definition.get_closest_marker("stage")
    post_ln = metafunc.definition.get_closest_marker("post_ln") is not None
    chosen = implementations(marker.args[0] if marker else None, post_ln)
    metafunc.parametrize("tf", [path for _, path in chosen], indirect=True, ids=[i for i, _ in chosen])


@pytest.fixture
def tf(request) -> ModuleType:
    if isinstance(request.param, str):  # a pitfall's name, from TRANSFORMER_IMPL
        from debug_pitfalls import load_variant

        return load_variant(request.param)
    return load_module(request.param)
