"""Deliberately broken transformers: each pitfall is transformer.py with exactly one plausible bug.

    from debug_pitfalls import PITFALLS, load_variant, variant_diff

    PITFALLS                        the manifest (debug_pitfalls/registry.py)
    load_variant("missing_scaling") a module with transformer.py's API and that one bug
    variant_diff("missing_scaling") the bug as a unified diff against transformer.py

`make pitfall NAME=...` shows one diff; `make test-bugs` runs tests/test_properties.py against
every variant and reports which test catches which bug (debug_pitfalls/harness.py).
"""

from .registry import PITFALLS, Edit, Pitfall
from .variants import PitfallDriftError, build_variant, find_pitfall, load_variant, variant_diff, variant_source


def expensive(test):
    """Mark a property test as slow: the harness runs it on a variant only when no faster test has caught it."""
    test.expensive = True
    return test


__all__ = [
    "PITFALLS",
    "Edit",
    "Pitfall",
    "PitfallDriftError",
    "build_variant",
    "expensive",
    "find_pitfall",
    "load_variant",
    "variant_diff",
    "variant_source",
]
