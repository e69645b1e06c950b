"""translate.py: the numbers task's rules, the user's files, the shared BPE, batches by length, checkpoints that
survive a kill and refuse to run code, exact resume, averaging, decoding and scoring, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import translate as tr
from translation import batches as tb
from translation import corpora
from translation import decoding as td

ROOT = Path(__file__).resolve().parent.parent
# the last line of `translate.py evaluate` (and so of `make translate`), as the README quotes it
CLOSING_LINE = re.compile(
    r"(.+: )?BLEU \d+\.\d \(sacreBLEU, cased\), \d+\.\d lowercased, exact match \d+\.\d% \(\d+/\d+\), beam \d+, "
    r"after \d+\.\d (s|min) of training"
)
TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--vocab-size", "120", "--threads", "1"]


# -- the numbers task ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, german, english",
    [
        (0, "null", "zero"),
        (1, "eins", "one"),
        (7, "sieben", "seven"),
        (16, "sechzehn", "sixteen"),
        (17, "siebzehn", "seventeen"),
        (21, "einundzwanzig", "twenty one"),
        (30, "dreißig", "thirty"),
        (101, "einhunderteins", "one hundred one"),
        (342, "dreihundertzweiundvierzig", "three hundred forty two"),
        (1001, "eintausendeins", "one thousand one"),
        (21007, "einundzwanzigtausendsieben", "twenty one thousand seven"),
        (71000, "einundsiebzigtausend", "seventy one thousand"),
        (100000, "einhunderttausend", "one hundred thousand"),
        (201301, "zweihunderteintausenddreihunderteins", "two hundred one thousand three hundred one"),
        (
            999999,
            "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
            "nine hundred ninety nine thousand nine hundred ninety nine",
        ),
    ],
)
def test_number_words_follow_the_rules(n, german, english):
    assert corpora.german_number(n) == german, f"{n} in German"
    assert corpora.english_number(n) == english, f"{n} in English"


def test_every_number_has_its_own_words():
    # a rule that merged two numbers (a lost "und", "ein" for "eins") would make two sources or targets equal
    numbers = range(0, 1_000_000, 7)
    assert len({corpora.german_number(n) for n in numbers}) == len(numbers), "two numbers share a German word"
    assert len({corpora.english_number(n) for n in numbers}) == len(numbers), "two numbers share English words"
    with pytest.raises(ValueError, match="0 to 999,999"):
        corpora.german_number(1_000_000)


def test_the_task_holds_out_numbers_by_hash_and_mixes_magnitudes():
    splits = tr.numbers_task(3000, 100, 200, seed=0)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [3000, 100, 200]
    train = {s for s, _ in splits["train"]}
    assert not train & {s for s, _ in splits["test"]} and not train & {s for s, _ in splits["valid"]}
    assert all(tr.split_of(s) == name for name, pairs in splits.items() for s, _ in pairs)
    lengths = {len(t.split()) for _, t in splits["train"]}
    assert min(lengths) == 1 and max(lengths) >= 8, "the task must hold short and long numbers"
    reverse = tr.numbers_task(300, 10, 10, seed=0, english_to_german=True)
    english_words = set(corpora.UNITS_EN + corpora.TEENS_EN + corpora.TENS_EN + ["hundred", "thousand", "zero"])
    for name, pairs in reverse.items():
        for source, target in pairs:
            assert set(source.split()) <= english_words and len(target.split()) == 1, (source, target)
            assert tr.split_of(source) == name, "English -> German is held out by the hash of the English"


# -- the user's files ----------------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_tsv_ignores_further_columns_and_blank_lines(tmp_path):
    path = write(
        tmp_path / "pairs.tsv", "Hallo Welt\tHello world\tCC-BY 2.0 (France) Attribution: tatoeba.org\n\nJa\tYes\n"
    )
    assert tr.read_tsv(path) == [("Hallo Welt", "Hello world"), ("Ja", "Yes")]


def test_line_aligned_files_pair_up_line_by_line(tmp_path):
    src = write(tmp_path / "train.de", "Ein Hund.\nZwei Katzen.\n")
    tgt = write(tmp_path / "train.en", "A dog.\r\nTwo cats.\r\n")  # Windows line ends too
    assert corpora.read_parallel(src, tgt) == [("Ein Hund.", "A dog."), ("Zwei Katzen.", "Two cats.")]


def test_shared_bpe_keeps_unicode_and_the_special_ids():
    texts = ["Straße über Äpfel", "café naïve résumé", "Ελληνικά και русский", "日本語のテキスト", "ﬁ ligature"] * 20
    tokenizer = tr.train_tokenizer(texts, 200)
    assert [tokenizer.token_to_id(t) for t in (tb.PAD, tb.BOS, tb.EOS, tb.UNK)] == [0, 1, 2, 3]
    for text in texts[:4]:
        ids = tokenizer.encode(text).ids
        assert tb.UNK not in tokenizer.encode(text).tokens, f"{text!r} lost characters to <unk>"
        assert tb.decode(tokenizer, torch.tensor([tb.BOS_ID, *ids, tb.EOS_ID, tr.PAD_ID])) == text, text


# -- batches by length ---------------------------------------------------------------------------------------


def examples(n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(2, 30, (n,), generator=generator)  # (n,)
    tgt = src + torch.randint(-2, 3, (n,), generator=generator)  # (n,): a translation is about as long
    return [tb.Example([5] * s, [1] + [6] * t) for s, t in zip(src.tolist(), tgt.tolist(), strict=True)]


def test_batches_respect_the_token_budget_and_cover_every_example_once():
    data = examples()
    batches = tr.length_batches(data, batch_tokens=200, seed=1, epoch=0)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(data))), "an epoch must hold every example exactly once"
    for batch in batches:
        width = max(max(len(data[i].src), len(data[i].tgt)) for i in batch)
        assert len(batch) == 1 or len(batch) * width <= 200, "a batch's padded size must stay within the budget"
    assert batches == tr.length_batches(data, 200, seed=1, epoch=0), "the same seed and epoch give the same batches"
    assert batches != tr.length_batches(data, 200, seed=1, epoch=1), "each epoch is shuffled anew"


def test_batching_by_length_cuts_the_padding():
    data = examples()
    by_length = tr.length_batches(data, 300, seed=0, epoch=0)
    at_random = tr.length_batches(data, 300, seed=0, epoch=0, pool=1)  # a pool of one batch: random lengths

    def share(batches):
        shares = [tr.padding_share(*tr.collate([data[i] for i in b], torch.device("cpu"))) for b in batches]
        return sum(shares) / len(shares)

    assert share(by_length) < 0.5 * share(at_random), (share(by_length), share(at_random))


def test_every_rank_gets_a_sentence():
    batches = tr.length_batches(examples(), 40, seed=0, epoch=0, min_rows=2)
    assert min(len(b) for b in batches) >= 2


# -- training, checkpoints, resume ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbers_tsv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    splits = tr.numbers_task(600, 20, 20, seed=0)
    tr.write_tsv(folder / "train.tsv", splits["train"] + splits["valid"] + splits["test"])  # split again by hash
    return folder


def train(run_dir, *flags, data=None):
    return tr.main(["train", "--out", str(run_dir), "--data", str(data), *TINY, *flags])


def weights(run_dir):
    return tr.load_model(run_dir).state_dict()


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_resume_continues_exactly(tmp_path, numbers_tsv):
    data = numbers_tsv / "train.tsv"
    assert train(tmp_path / "once", "--steps", "12", "--dropout", "0.1", data=data) == 0
    assert train(tmp_path / "twice", "--steps", "5", "--dropout", "0.1", data=data) == 0
    assert train(tmp_path / "twice", "--steps", "12", "--resume", data=data) == 0
    once, twice = weights(tmp_path / "once"), weights(tmp_path / "twice")
    for name in once:
        assert torch.equal(once[name], twice[name]), f"{name}: 5 steps + resume to 12 differ from 12 steps in one run"
    meta, states = tr.load_checkpoint(tr.resolve_checkpoint(tmp_path / "twice"))
    assert meta["step"] == 12 and states["scheduler"]["last_epoch"] == 12
    records = [json.loads(line) for line in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s", "padding"} <= set(records[0]) and records[-1]["step"] == 12
    assert "valid_loss" in records[-1] and "valid_bleu" in records[-1] and "valid_looping" in records[-1]


def test_checkpoints_keep_the_last_k_and_hold_everything_to_resume(tmp_path, numbers_tsv):
    run = tmp_path / "run"
    assert train(run, "--steps", "8", "--save-every", "2", "--keep", "2", data=numbers_tsv / "train.tsv") == 0
    assert [p.name for p in tr.checkpoints(run)] == ["step-0000006.pt", "step-0000008.pt"]
    meta, states = tr.load_checkpoint(tr.checkpoints(run)[-1])
    assert {"config", "tokenizer", "step", "epoch", "position", "seed"} <= set(meta)
    assert {"model", "optimizer", "scheduler", "rng"} <= set(states)
    assert tr.load_tokenizer(run).to_str() == (run / "tokenizer.json").read_text()
    assert not tr.load_model(run).training, "load_model returns the model in eval mode"


def test_a_kill_during_a_save_leaves_the_latest_checkpoint_intact(tmp_path, numbers_tsv, monkeypatch):
    run = tmp_path / "run"
    assert train(run, "--steps", "3", data=numbers_tsv / "train.tsv") == 0
    before = snapshot(run / "checkpoints")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half a file on disk, then the process dies
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        tr.save_checkpoint(tr.checkpoints(run)[-1], {"config": {}}, {"model": {}})
    monkeypatch.undo()
    assert {k: v for k, v in snapshot(run / "checkpoints").items() if not Path(k).name.startswith(".")} == before
    assert tr.load_model(run) is not None, "the latest checkpoint must still load"


def test_ctrl_c_finishes_the_step_saves_it_and_resume_picks_it_up(tmp_path, numbers_tsv, monkeypatch, capsys):
    run, calls = tmp_path / "run", []
    real_step = tr.train_step

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 4
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tr, "train_step", interrupted_step)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest itself runs in the background
    assert train(run, "--steps", "10", data=numbers_tsv / "train.tsv") == 130
    monkeypatch.undo()
    assert [p.name for p in tr.checkpoints(run)] == ["step-0000004.pt"]
    assert "interrupted at step 4" in capsys.readouterr().out
    assert train(tmp_path / "four", "--steps", "4", data=numbers_tsv / "train.tsv") == 0
    interrupted, four = weights(run), weights(tmp_path / "four")
    assert all(torch.equal(interrupted[k], four[k]) for k in four), "the checkpoint of step 4 holds other weights"
    assert signal.getsignal(signal.SIGINT) is before, "training must give Ctrl-C back as it found it"
    assert train(run, "--steps", "6", "--resume", data=numbers_tsv / "train.tsv") == 0
    assert tr.load_checkpoint(tr.checkpoints(run)[-1])[0]["step"] == 6


class RunsCode:
    """A pickle that, when loaded by plain pickle, writes a file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_runs_nothing(tmp_path, numbers_tsv, capsys):
    run = tmp_path / "run"
    assert train(run, "--steps", "2", data=numbers_tsv / "train.tsv") == 0
    marker = tmp_path / "pwned"
    evil = tr.checkpoints(run)[-1].with_name("step-9999999.pt")
    torch.save({"tensors": {}, "meta": RunsCode(marker)}, evil)  # torch.save pickles the object as it is
    capsys.readouterr()
    assert tr.main(["evaluate", str(run), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a translate.py checkpoint" in err, err
    assert not marker.exists(), "loading the checkpoint ran the code inside it"
    torch.load(evil, weights_only=False)  # what a plain unpickler does with the same file: the test is real
    assert marker.exists()


def test_averaging_takes_the_mean_of_the_last_k(tmp_path, numbers_tsv):
    run = tmp_path / "run"
    assert train(run, "--steps", "6", "--save-every", "2", data=numbers_tsv / "train.tsv") == 0
    paths = tr.checkpoints(run)[-2:]
    assert tr.main(["average", str(run), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    averaged = tr.load_model(tmp_path / "avg.pt").state_dict()
    parts = [tr.load_checkpoint(p)[1]["model"] for p in paths]
    name = "encoder.layers.0.feed_forward.w_1.weight"
    assert not torch.equal(parts[0][name], parts[1][name])
    assert torch.allclose(averaged[name], (parts[0][name] + parts[1][name]) / 2, atol=1e-7)


# -- decoding and scoring on a trained model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def numbers_run(tmp_path_factory):
    """The numbers task, trained for a few seconds: good, not perfect, so beam and greedy can differ."""
    run = tmp_path_factory.mktemp("run") / "numbers"
    flags = ["--numbers", "6000", "--steps", "400", "--threads", "1"]
    assert tr.main(["train", "--out", str(run), *flags]) == 0
    return run


def test_beam_search_is_at_least_as_good_as_greedy_on_the_numbers_task(numbers_run):
    model, tokenizer = tr.load_model(numbers_run), tr.load_tokenizer(numbers_run)
    pairs = tr.read_tsv(numbers_run / "test.tsv")
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    greedy = tr.score(tr.translate_texts(model, tokenizer, sources, beam=1, alpha=0.6), references)
    beam = tr.score(tr.translate_texts(model, tokenizer, sources, beam=4, alpha=0.6), references)
    assert greedy["exact"] >= 0.5 * len(pairs), f"the model did not learn: {greedy['exact']}/{len(pairs)}"
    print(
        f"greedy {greedy['exact']}/{len(pairs)} BLEU {greedy['bleu']:.2f}; beam 4 {beam['exact']} BLEU {beam['bleu']:.2f}"
    )
    assert beam["exact"] >= greedy["exact"] and beam["bleu"] >= greedy["bleu"] - 0.1, (beam, greedy)


def test_evaluate_prints_the_signature_and_the_closing_line(numbers_run, capsys):
    assert tr.main(["evaluate", str(numbers_run), "--beam", "2", "--examples", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0" in out
    last = out.strip().splitlines()[-1]
    assert CLOSING_LINE.fullmatch(last) and "/1000), beam 2, after" in last, last


def test_bleu_is_reported_cased_and_lowercased_with_both_signatures():
    result = tr.score(["A black dog runs across the green grass ."], ["a black dog runs across the green grass ."])
    assert result["bleu_lowercase"] == pytest.approx(100.0), "lowercased BLEU must ignore case"
    assert result["bleu"] < 90.0, "cased BLEU must count 'A' against 'a' as a miss"
    assert "case:mixed" in result["bleu_signature"] and "case:lc" in result["bleu_lowercase_signature"]


@pytest.mark.parametrize(
    "text, looping",
    [
        ("a man in a dark dress and a dark dress and a dark dress and a", True),
        ("the dog barks barks barks", True),
        ("a man and a woman and a child", False),
        ("two dogs play . two dogs play .", False),
        ("", False),
    ],
    ids=["three-words-thrice", "one-word-thrice", "and-twice", "a-sentence-twice", "empty"],
)
def test_a_loop_is_the_same_words_three_times_in_a_row(text, looping):
    assert tr.loops(text) is looping, f"{text!r} should {'' if looping else 'not '}count as a loop"
    assert tr.score([text or "x"], ["a reference"])["looping"] == int(looping)


def test_evaluate_puts_the_title_first_and_long_training_in_minutes(numbers_run, capsys):
    assert tr.duration(59.0) == "59.0 s" and tr.duration(1710.0) == "28.5 min"
    argv = ["evaluate", str(numbers_run), "--beam", "1", "--examples", "0", "--threads", "1", "--title", "numbers"]
    assert tr.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert CLOSING_LINE.fullmatch(last) and last.startswith("numbers: BLEU "), last


def test_evaluate_says_when_bleu_cannot_mean_anything(numbers_run, tmp_path, capsys):
    # English -> German turned round: German numbers are one word, and BLEU's 4-grams never match one word
    pairs = tr.read_tsv(numbers_run / "test.tsv")[:20]
    data = write(tmp_path / "one_word.tsv", "".join(f"{s}\t{s}\n" for s, _ in pairs))
    assert tr.main(["evaluate", str(numbers_run), "--data", str(data), "--beam", "1", "--threads", "1"]) == 0
    assert "most references are one word" in capsys.readouterr().out


def test_translate_reads_arguments_or_stdin_and_draws_the_alignment(numbers_run, tmp_path, capsys, monkeypatch):
    plot = tmp_path / "alignment.png"
    assert tr.main(["translate", str(numbers_run), "dreihundertzweiundvierzig", "--plot", str(plot)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("three hundred")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    source, target, weights = td.cross_attention(
        tr.load_model(numbers_run), tr.load_tokenizer(numbers_run), "dreihundertzweiundvierzig", 1, 0.0
    )
    assert weights.shape == (len(target), len(source)) and torch.allclose(weights.sum(-1), torch.ones(len(target)))
    long = " ".join(["dreihundertzweiundvierzig"] * 100)  # at least 200 pieces, more than max_len
    assert tr.main(["translate", str(numbers_run), long, "--beam", "1"]) == 0
    assert "1 sentence is longer than max_len=128 tokens and cut to it" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("\ufeffsieben\n\nelf\n"))  # a BOM first, as Notepad
    assert tr.main(["translate", str(numbers_run), "--beam", "1"]) == 0
    expected = tr.translate_texts(tr.load_model(numbers_run), tr.load_tokenizer(numbers_run), ["sieben", "elf"], 1, 0.6)
    assert capsys.readouterr().out.splitlines() == expected, "one translation per non-blank line of stdin"


# -- bad input: one line, exit 2, nothing damaged ------------------------------------------------------------


@pytest.mark.parametrize(
    "files, flags, words",
    [
        ({}, ["--data", "{d}/missing.tsv"], "missing.tsv: no such file"),
        ({"empty.tsv": b"\n\n"}, ["--data", "{d}/empty.tsv"], "empty.tsv: the file is empty"),
        ({"notab.tsv": "ein\tone\nzwei two\n"}, ["--data", "{d}/notab.tsv"], "notab.tsv:2: expected source<TAB>target"),
        (
            {"latin1.tsv": b"gut\tgood\nsch\xf6n\tnice\n"},
            ["--data", "{d}/latin1.tsv"],
            "latin1.tsv:2: not UTF-8 (byte 0xf6",
        ),
        ({"a.de": "eins\nzwei\n", "a.en": "one\n"}, ["--src", "{d}/a.de", "--tgt", "{d}/a.en"], "a.de has 2 lines but"),
        ({"a.de": "eins\n"}, ["--src", "{d}/a.de"], "--src and --tgt come together"),
        ({"v.tsv": "eins\tone\n"}, ["--valid", "{d}/v.tsv"], "--valid and --test go with your own data"),
        (
            {"a.tsv": "eins\tone\n"},
            ["--data", "{d}/a.tsv", "--test", "{d}/a.tsv", "{d}/a.tsv", "{d}/a.tsv"],
            "--test takes FILE.tsv or SRC_FILE TGT_FILE, got 3",
        ),
        (
            {"a.tsv": "eins\tone\n"},
            ["--data", "{d}/a.tsv", "--d-model", "30", "--heads", "4"],
            "d_model must be divisible",
        ),
    ],
    ids=[
        "missing",
        "empty",
        "no-tab",
        "not-utf8",
        "line-counts",
        "src-alone",
        "valid-without-data",
        "three-test-files",
        "bad-config",
    ],
)
def test_bad_training_input_gets_one_line_and_exit_2(tmp_path, capsys, files, flags, words):
    for name, content in files.items():
        write(tmp_path / name, content)
    argv = ["train", "--out", str(tmp_path / "run"), *[f.format(d=tmp_path) for f in flags]]
    assert tr.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, f"expected one line with {words!r}, got {err!r}"
    assert not (tmp_path / "run" / "checkpoints").exists() or not tr.checkpoints(tmp_path / "run")


def test_pairs_longer_than_max_len_are_left_out_and_counted(tmp_path, capsys):
    long = " ".join(["wort"] * 40)
    data = write(tmp_path / "pairs.tsv", "".join(f"kurz {i}\tshort {i}\n" for i in range(30)) + f"{long}\tlong\n")
    assert (
        tr.main(
            ["train", "--out", str(tmp_path / "run"), "--data", str(data), *TINY, "--max-len", "12", "--steps", "1"]
        )
        == 0
    )
    assert re.search(r"left out 1 training pairs longer than max_len=12", capsys.readouterr().out)


def test_bad_runs_get_one_line_and_leave_the_run_directory_alone(tmp_path, numbers_tsv, capsys):
    run = tmp_path / "run"
    assert train(run, "--steps", "2", data=numbers_tsv / "train.tsv") == 0
    before = snapshot(run)
    write(tmp_path / "garbage.pt", b"\x00\x01 not a checkpoint at all")
    (tmp_path / "empty_run").mkdir()
    cases = [
        (["train", "--out", str(run), "--data", str(numbers_tsv / "train.tsv"), *TINY], "already holds a run"),
        (
            ["train", "--out", str(run), "--resume", "--d-model", "32", "--heads", "2"],
            "was trained with --d-model 16, not 32",
        ),
        (["train", "--out", str(run), "--resume", "--batch-tokens", "999"], "was trained with --batch-tokens 600"),
        (["train", "--out", str(run), "--resume", "--pool", "999"], f"was trained with --pool {tb.POOL}"),
        (["evaluate", str(tmp_path / "empty_run")], "no checkpoint in"),
        (["translate", str(tmp_path / "nowhere"), "eins"], "no such run directory or checkpoint file"),
        (["evaluate", str(tmp_path / "garbage.pt")], "garbage.pt: not a translate.py checkpoint"),
        (["average", str(run), "--last", "3", "--out", str(tmp_path / "a.pt")], "--last 3 asks for more checkpoints"),
        (["train", "--out", str(tmp_path / "fresh"), "--resume"], "no checkpoint to resume from"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert tr.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, (
            f"{argv}: expected one line with {words!r}, got {err!r}"
        )
    assert snapshot(run) == before, "a failed command changed the run directory"


def test_the_command_line_prints_no_traceback(tmp_path):
    write(tmp_path / "garbage.pt", b"PK\x03\x04 a zip that is not torch's")
    result = subprocess.run(
        [sys.executable, str(ROOT / "translate.py"), "evaluate", str(tmp_path / "garbage.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip()]
        and "not a translate.py checkpoint" in result.stderr
    )


def test_given_validation_and_test_files_replace_the_hashed_splits(tmp_path, numbers_tsv):
    pairs = tr.read_tsv(numbers_tsv / "train.tsv")
    write(tmp_path / "valid.de", "".join(s + "\n" for s, _ in pairs[:5]))
    write(tmp_path / "valid.en", "".join(t + "\n" for _, t in pairs[:5]))
    tr.write_tsv(tmp_path / "test.tsv", pairs[5:8])
    run = tmp_path / "run"
    flags = ["--valid", str(tmp_path / "valid.de"), str(tmp_path / "valid.en"), "--test", str(tmp_path / "test.tsv")]
    assert train(run, "--steps", "1", *flags, data=numbers_tsv / "train.tsv") == 0
    assert tr.read_tsv(run / "valid.tsv") == pairs[:5] and tr.read_tsv(run / "test.tsv") == pairs[5:8]
    trained = tr.read_tsv(run / "train.tsv")
    assert len(trained) == len(pairs) - 8, "every other pair trains, the hashed-out ones included"
    assert not {s for s, _ in trained} & {s for s, _ in pairs[:8]}, "a validation or test sentence is in training"
