"""translate.py's boundary: every bad invocation, over every sub-command, is one line on stderr and exit status 2,
with no traceback and nothing half-written; a resume takes the stored settings and refuses a changed one."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import translate as tr
from translation import corpora

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--vocab-size", "120", "--threads", "1"]


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a tiny trained run, its data, and files of every kind a path may wrongly name."""
    d = tmp_path_factory.mktemp("cli")
    splits = corpora.numbers_task(300, 20, 20, seed=0)
    corpora.write_tsv(d / "train.tsv", splits["train"])
    corpora.write_tsv(d / "other.tsv", splits["train"][:200])
    (d / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    (d / "a.en").write_text("one\n", encoding="utf-8")
    (d / "latin1.tsv").write_bytes(b"gut\tgood\nsch\xf6n\tnice\n")
    (d / "latin1.de").write_bytes(b"sch\xf6n\n")
    (d / "file.txt").write_text("not a folder\n", encoding="utf-8")
    (d / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint")
    (d / "folder").mkdir()
    run = d / "run"
    argv = ["train", "--out", str(run), "--data", str(d / "train.tsv"), *TINY, "--steps", "2", "--eval-every", "0"]
    assert tr.main([*argv, "--quiet"]) == 0
    return d


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


T = ["train", "--out", "{d}/new"]
RUN = ["train", "--out", "{d}/run", "--resume"]
# (id, argv with {d} for the folder, words the one line must hold)
CASES = [
    # train: each value out of its range, or not a number at all
    ("steps-0", [*T, "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    ("steps-negative", [*T, "--steps", "-5"], "--steps: expected an integer >= 1, got -5"),
    ("steps-word", [*T, "--steps", "many"], "expected an integer, got 'many'"),
    ("eval-every-negative", [*T, "--eval-every", "-1"], "--eval-every: expected an integer >= 0, got -1"),
    ("save-every-negative", [*T, "--save-every", "-1"], "--save-every: expected an integer >= 0"),
    ("log-every-0", [*T, "--log-every", "0"], "--log-every: expected an integer >= 1"),
    ("keep-0", [*T, "--keep", "0"], "--keep: expected an integer >= 1"),
    ("lr-factor-inf", [*T, "--lr-factor", "inf"], "--lr-factor: expected a finite number > 0, got inf"),
    ("lr-factor-nan", [*T, "--lr-factor", "nan"], "--lr-factor: expected a finite number > 0"),
    ("lr-factor-0", [*T, "--lr-factor", "0"], "--lr-factor: expected a finite number > 0, got 0.0"),
    ("dropout-1", [*T, "--dropout", "1"], "--dropout: expected a number in [0, 1), got 1.0"),
    ("dropout-negative", [*T, "--dropout", "-0.1"], "--dropout: expected a number in [0, 1)"),
    ("label-smoothing-nan", [*T, "--label-smoothing", "nan"], "--label-smoothing: expected a number in [0, 1)"),
    ("cooldown-1", [*T, "--cooldown", "1"], "--cooldown: expected a number in [0, 1)"),
    ("warmup-0", [*T, "--warmup", "0"], "--warmup: expected an integer >= 1"),
    ("batch-tokens-0", [*T, "--batch-tokens", "0"], "--batch-tokens: expected an integer >= 1"),
    ("pool-0", [*T, "--pool", "0"], "--pool: expected an integer >= 1"),
    ("vocab-size-0", [*T, "--vocab-size", "0"], "--vocab-size: expected an integer >= 5"),
    ("threads-0", [*T, "--threads", "0"], "--threads: expected an integer >= 1"),
    (
        "heads-not-dividing",
        [*T, "--data", "{d}/train.tsv", *TINY, "--d-model", "30", "--heads", "4"],
        "d_model must be divisible",
    ),
    ("precision-unknown", [*T, "--precision", "fp8"], "invalid choice: 'fp8'"),
    ("flag-unknown", [*T, "--lerning-rate", "1"], "unrecognized arguments: --lerning-rate"),
    ("recipe-unknown", [*T, "--recipe", "wmt"], "invalid choice: 'wmt'"),
    # train: paths as a file, a folder, missing, unwritable
    ("out-is-a-file", ["train", "--out", "{d}/file.txt"], "--out {d}/file.txt: expected a folder, found a file"),
    ("out-under-a-file", ["train", "--out", "{d}/file.txt/run"], "cannot be written"),
    ("out-unwritable", ["train", "--out", "/proc/no-run-here", "--steps", "1"], "/proc/no-run-here"),
    ("data-missing", [*T, "--data", "{d}/missing.tsv"], "missing.tsv: no such file"),
    ("data-is-a-folder", [*T, "--data", "{d}/folder"], "folder: expected a file, found a folder"),
    ("data-not-utf8", [*T, "--data", "{d}/latin1.tsv"], "latin1.tsv:2: not UTF-8 (byte 0xf6"),
    ("src-alone", [*T, "--src", "{d}/a.de"], "--src and --tgt come together"),
    ("src-tgt-lines", [*T, "--src", "{d}/a.de", "--tgt", "{d}/a.en"], "a.de has 2 lines but"),
    ("src-not-utf8", [*T, "--src", "{d}/latin1.de", "--tgt", "{d}/a.en"], "latin1.de:1: not UTF-8"),
    ("data-and-src", [*T, "--data", "{d}/train.tsv", "--src", "{d}/a.de", "--tgt", "{d}/a.en"], "not both"),
    ("valid-three-files", [*T, "--data", "{d}/train.tsv", "--valid", "{d}/a.de", "{d}/a.de", "{d}/a.de"], "got 3"),
    ("valid-without-data", [*T, "--valid", "{d}/train.tsv"], "--valid and --test go with your own data"),
    # train: a run that exists, or does not
    ("run-exists", ["train", "--out", "{d}/run", "--data", "{d}/train.tsv", *TINY], "already holds a run"),
    ("resume-nothing", ["train", "--out", "{d}/folder", "--resume"], "no checkpoint to resume from"),
    ("resume-other-data", [*RUN, "--data", "{d}/other.tsv"], "was trained with --data {d}/train.tsv, not"),
    ("resume-other-vocabulary", [*RUN, "--vocab-size", "200"], "was trained with --vocab-size 120, not 200"),
    ("resume-other-seed", [*RUN, "--seed", "7"], "was trained with --seed 0, not 7"),
    ("resume-other-model", [*RUN, "--d-model", "32", "--heads", "2"], "was trained with --d-model 16, not 32"),
    ("resume-other-dropout", [*RUN, "--dropout", "0.3"], "was trained with --dropout 0.0, not 0.3"),
    ("resume-other-pre-tokenizer", [*RUN, "--pre-tokenizer", "spaces"], "--pre-tokenizer punctuation, not spaces"),
    ("resume-other-batches", [*RUN, "--batch-tokens", "999"], "was trained with --batch-tokens 600, not 999"),
    # evaluate and translate
    ("beam-0", ["evaluate", "{d}/run", "--beam", "0"], "--beam: expected an integer >= 1, got 0"),
    ("beam-beyond-vocabulary", ["translate", "{d}/run", "neun", "--beam", "100000"], "--beam 100000: expected at"),
    ("alpha-inf", ["evaluate", "{d}/run", "--alpha", "inf"], "--alpha: expected a finite number >= 0, got inf"),
    ("alpha-negative", ["translate", "{d}/run", "eins", "--alpha", "-1"], "--alpha: expected a finite number >= 0"),
    ("examples-negative", ["evaluate", "{d}/run", "--examples", "-3"], "--examples: expected an integer >= 0"),
    ("json-missing-folder", ["evaluate", "{d}/run", "--json", "{d}/nowhere/s.json"], "no such folder"),
    ("json-is-a-folder", ["evaluate", "{d}/run", "--json", "{d}/folder"], "expected a file name, found a folder"),
    ("plot-missing-folder", ["translate", "{d}/run", "eins", "--plot", "{d}/nowhere/a.png"], "no such folder"),
    ("plot-is-a-folder", ["translate", "{d}/run", "eins", "--plot", "{d}/folder"], "found a folder"),
    ("run-missing", ["translate", "{d}/missing", "eins"], "no such run directory or checkpoint file"),
    ("run-empty-folder", ["evaluate", "{d}/folder"], "no checkpoint in"),
    ("run-garbage", ["evaluate", "{d}/garbage.pt"], "garbage.pt: not a translate.py checkpoint"),
    ("test-data-missing", ["evaluate", "{d}/run", "--data", "{d}/missing.tsv"], "missing.tsv: no such file"),
    ("test-data-not-utf8", ["evaluate", "{d}/run", "--data", "{d}/latin1.tsv"], "latin1.tsv:2: not UTF-8"),
    ("translate-flag-of-evaluate", ["translate", "{d}/run", "eins", "--json", "x"], "unrecognized arguments: --json"),
    # average
    ("average-into-checkpoints", ["average", "{d}/run", "--last", "1", "--out", "{d}/run/checkpoints/a.pt"], "among"),
    ("average-last-0", ["average", "{d}/run", "--last", "0", "--out", "{d}/a.pt"], "--last: expected an integer >= 1"),
    ("average-too-many", ["average", "{d}/run", "--last", "9", "--out", "{d}/a.pt"], "asks for more checkpoints"),
    ("average-out-missing-folder", ["average", "{d}/run", "--out", "{d}/nowhere/a.pt"], "no such folder"),
    ("average-no-out", ["average", "{d}/run"], "the following arguments are required: --out"),
    ("average-no-run", ["average", "{d}/missing", "--out", "{d}/a.pt"], "no checkpoints to average"),
    # fetch and export-web
    ("fetch-out-is-a-file", ["fetch", "multi30k", "--out", "{d}/file.txt"], "expected a folder, found a file"),
    ("fetch-from-missing", ["fetch", "multi30k", "--out", "{d}/m30k", "--from", "{d}/missing"], "--from"),
    ("fetch-unknown-data-set", ["fetch", "wmt14"], "invalid choice: 'wmt14'"),
    ("export-out-is-a-file", ["export-web", "{d}/run", "--out", "{d}/file.txt"], "expected a folder, found a file"),
    ("export-run-missing", ["export-web", "{d}/missing", "--out", "{d}/web"], "no such run directory"),
    # the command itself
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["trian"], "invalid choice: 'trian'"),
]


@pytest.mark.parametrize("argv, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_invocation_is_one_line_and_exit_2(place, capsys, argv, words):
    before = snapshot(place)
    argv = [a.format(d=place) for a in argv]
    assert exit_status(argv) == 2, f"{argv} did not exit with status 2"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"{argv}: expected one line on stderr, got {err!r}"
    assert words.format(d=place) in err, f"{argv}: expected the line to say {words!r}, got {err!r}"
    assert snapshot(place) == before, f"{argv} wrote or changed files"


def exit_status(argv: list[str]) -> int:
    """main's return value, or the status argparse exits with (it reports its own errors, as one line)."""
    try:
        return tr.main(argv)
    except SystemExit as exit:
        return exit.code


def test_stdin_that_is_not_utf8_is_one_line(place, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"neun\nsch\xf6n\n")))
    assert tr.main(["translate", str(place / "run"), "--beam", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "stdin: not UTF-8 (byte 0xf6 at offset 8)" in err, err


def test_nothing_to_translate_is_one_line(place, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n  \n")))
    assert tr.main(["translate", str(place / "run")]) == 2
    assert "nothing to translate" in capsys.readouterr().err


def test_sentences_may_follow_the_flags(place, capsys):
    assert tr.main(["translate", str(place / "run"), "--beam", "2", "neun", "--alpha", "0.6", "elf"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2, "two sentences, two translations"


def test_a_real_process_prints_no_traceback(place):
    result = subprocess.run(
        [sys.executable, str(ROOT / "translate.py"), "translate", str(place / "run"), "neun", "--beam", "100000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_resume_takes_free_settings_and_keeps_the_stored_ones(place, tmp_path):
    run = tmp_path / "run"
    first = ["train", "--out", str(run), "--data", str(place / "train.tsv"), *TINY, "--steps", "2", "--seed", "3"]
    assert tr.main([*first, "--eval-every", "0", "--quiet"]) == 0
    # --threads, --quiet, --eval-every and a higher --steps cannot change what the run is: taken
    assert tr.main(["train", "--out", str(run), "--resume", "--threads", "2", "--steps", "3", "--quiet"]) == 0
    meta, _ = tr.load_checkpoint(tr.checkpoints(run)[-1])
    stored = meta["settings"]
    assert meta["step"] == 3 and stored["seed"] == 3 and stored["data"] == str(place / "train.tsv"), stored
    assert stored["threads"] == 2, "the resumed run's own --threads is what it ran with"


def test_resume_of_a_cooled_down_run_keeps_its_steps(place, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--data", str(place / "train.tsv"), *TINY, "--steps", "2", "--quiet"]
    assert tr.main([*argv, "--cooldown", "0.5", "--eval-every", "0"]) == 0
    assert tr.main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 2
    assert (
        "was trained with --steps 2, not 4 (the cooldown is laid out over the run's steps)" in capsys.readouterr().err
    )


def test_a_tab_inside_a_sentence_does_not_split_it_on_resume(tmp_path):
    (tmp_path / "s.de").write_text("".join(f"eins\tzwei {i}\n" for i in range(60)), encoding="utf-8")
    (tmp_path / "s.en").write_text("".join(f"one two {i}\n" for i in range(60)), encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--src", str(tmp_path / "s.de"), "--tgt", str(tmp_path / "s.en"), *TINY]
    assert tr.main([*argv, "--steps", "1", "--eval-every", "0", "--quiet"]) == 0
    kept = tr.read_tsv(run / "train.tsv") + tr.read_tsv(run / "valid.tsv", may_be_empty=True)
    assert all(s.startswith("eins zwei ") for s, _ in kept), "a tab in a source sentence came back as a column"
    assert json.loads(json.dumps(kept)) == [list(p) for p in kept]
