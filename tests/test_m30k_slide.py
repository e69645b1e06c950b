"""talk/m30k.py and the Multi30k figure: what the slides show of a `make translate-m30k` run is read off a real run
(here a tiny numbers run laid out the same way: averaged.pt, test2016.json, metrics.jsonl, test.tsv), and the figure
is drawn from that snapshot alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

import translate as tr
from tests.conftest import ROOT, load_module

m30k = load_module(ROOT / "talk" / "m30k.py")
figures = load_module(ROOT / "talk" / "figures.py")
TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--vocab-size", "120", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("m30k") / "run"
    steps = ["--numbers", "300", "--steps", "6", "--save-every", "2", "--keep", "2", "--eval-every", "3"]
    assert tr.main(["train", "--out", str(run), *TINY, *steps, "--quiet"]) == 0
    assert tr.main(["average", str(run), "--last", "2", "--out", str(run / "averaged.pt")]) == 0
    tr.write_tsv(run / "some.tsv", tr.read_tsv(run / "test.tsv")[:50])
    argv = ["evaluate", str(run / "averaged.pt"), "--data", str(run / "some.tsv"), "--beam", "2", "--examples", "0"]
    assert tr.main([*argv, "--threads", "1", "--json", str(run / "test2016.json")]) == 0
    return run


def test_the_snapshot_keeps_the_run_as_it_is(run, tmp_path):
    data = m30k.snapshot(run, tmp_path / "m30k.json", examples=3)
    assert json.loads((tmp_path / "m30k.json").read_text(encoding="utf-8")) == data
    scores = json.loads((run / "test2016.json").read_text(encoding="utf-8"))
    assert data["test2016"]["bleu"] == scores["bleu"] and data["test2016"]["bleu_lowercase"] == scores["bleu_lowercase"]
    assert data["test2016"]["beam"] == 2, "the beam of the evaluation that scored it"
    pairs = tr.read_tsv(run / "test.tsv")[:3]
    assert [(e["source"], e["reference"]) for e in data["examples"]] == pairs, "the first test sentences, not chosen"
    _, _, model, tokenizer = tr.load_run(run / "averaged.pt")
    assert [e["translation"] for e in data["examples"]] == tr.translate_texts(
        model, tokenizer, [s for s, _ in pairs], beam=4, alpha=0.6
    )
    cross = np.array(data["attention"]["cross"])
    assert cross.shape == (len(data["attention"]["target"]), len(data["attention"]["source"]))
    assert np.allclose(cross.sum(axis=1), 1.0, atol=1e-5), "each row of attention weights sums to 1"
    assert [v["step"] for v in data["validation"]] == [3, 6], "a validation at step 3 and one at the end"
    assert all({"valid_bleu", "valid_looping", "valid_loop_example"} <= set(v) for v in data["validation"])


def test_the_figure_is_drawn_from_the_snapshot_alone(run, tmp_path):
    data = m30k.snapshot(run, tmp_path / "m30k.json")
    figures.draw_m30k(tmp_path / "m30k.png", json.loads((tmp_path / "m30k.json").read_text(encoding="utf-8")))
    assert figures.png_size(tmp_path / "m30k.png") == (1600, 900)
    assert data["train_minutes"] >= 0


def test_a_run_without_its_scores_gets_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert m30k.main([str(tmp_path / "run"), "--out", str(tmp_path / "m30k.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "run `make translate-m30k` first" in err, err
    assert not (tmp_path / "m30k.json").exists()
