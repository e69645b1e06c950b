"""Numbered snapshots of transformer.py; `stages.manifest` lists them."""
