"""The model in a browser (translation/web.py and the page in translation/web/): the JavaScript computes what
PyTorch computes, in Node and in a real Chromium opened from file://, and tokenizes as HF tokenizers does.

One tiny model is trained for the whole module, exported twice (float32 and float16), and every browser check runs
in one Chromium launch. Node is needed for all of it; the Chromium tests also need talk/node_modules/playwright-core
(`npm ci` in talk/) and Debian's chromium. Without them the tests skip, saying what is missing; on CI (env CI set)
they fail instead, because .ci/run installs all three.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

import translate as tr
from tests.conftest import ROOT, load_module
from transformer import MultiHeadAttention, greedy_decode
from translation import web

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--vocab-size", "120", "--threads", "1"]
TOLERANCE = 1e-4  # float32: the page sums in float64, PyTorch in float32 with its own order
HELD_OUT = 12  # random sentences of the held-out split, not chosen by the test
TYPED = slice(3, 8)  # those of them typed into the page's box in Chromium


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(*needs) -> str | None:
    for need in needs:
        try:
            need()
        except web.MissingTool as error:
            return str(error)
    return None


def need(*tools) -> None:
    """Skip, or on CI fail, when a tool the test needs is not installed."""
    why = missing(*tools)
    if why:
        if on_ci():
            pytest.fail(f"the page's tests must run on CI, but {why}: .ci/run installs node, chromium and npm ci")
        pytest.skip(f"skipped: {why}")


# -----------------------------------------------------------------------------
# What PyTorch computes, once for the module
# -----------------------------------------------------------------------------


def torch_forward(model, src: list[int], tgt: list[int]) -> dict:
    """model(src, tgt) for one sentence: logits (T, V) and every attention weight, as numpy arrays."""
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    for m in layers:
        m.keep_weights = True
    try:
        with torch.no_grad():
            logits = model(torch.tensor([src]), torch.tensor([tgt]))[0]  # (T, V)
        weights = lambda stack, name: [getattr(x, name).last_weights[0].numpy() for x in stack.layers]  # noqa: E731
        return {
            "logits": logits.numpy(),
            "encoder": weights(model.encoder, "self_attn"),  # per layer (H, S, S)
            "self": weights(model.decoder, "self_attn"),  # (H, T, T)
            "cross": weights(model.decoder, "cross_attn"),  # (H, T, S)
        }
    finally:
        for m in layers:
            m.keep_weights, m.last_weights = False, None


def greedy(model, tokenizer, text: str) -> str:
    """translate.py's greedy decoding of one sentence, as `translate.py translate --beam 1 TEXT` gives it."""
    return tr.translate_texts(model, tokenizer, [text], beam=1, alpha=0.0)[0]


def greedy_tokens(model, tokenizer, text: str) -> list[int]:
    """transformer.py's greedy_decode of one sentence, with translate.py's source and cap: <s> to </s>."""
    (src,), _ = tr.source_ids(tokenizer, [text], model.config.max_len)
    cap = min(model.config.max_len - 1, 2 * len(src) + 10)  # translate.py's decode_batch for a batch of one
    return greedy_decode(model, torch.tensor([src]), cap, bos_id=1, eos_id=2)[0].tolist()


def made_up_sentences(rng: random.Random, n: int) -> list[str]:
    """German-looking text with what a tokenizer trips on: umlauts, ß, digits, punctuation of every kind."""
    words = (
        "Ein Mann mit einem orangefarbenen Hut der etwas anstarrt Fünf Leute in Winterjacken stehen im Schnee "
        "Mädchen Straße größer Bücher über schön Grüße Öl Äpfel Karateanzug bricht Brett"
    ).split()
    marks = list(",.;:!?\"'()-–—…„“”‚‘’«»/&%$€§#*+=<>@[]{}|~^_`")
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            part = rng.choice(words) if r < 0.6 else str(rng.randint(0, 99999)) if r < 0.75 else rng.choice(marks)
            parts.append(part + (rng.choice(marks) if r >= 0.9 else ""))
        out.append("".join(p + rng.choice([" ", " ", " ", "", "  "]) for p in parts).strip())
    return out


# the cases a BPE port gets wrong: spaces, the special tokens written out, "▁" itself, decomposed umlauts, ...
ODD_TEXTS = [
    "",
    " ",
    "  zwei  Leerzeichen  ",
    "\tTab\tund\nZeile",
    "a\u0308rger U\u0308ber o\u0308l",  # decomposed: NFC makes them ärger Über öl
    "Hallo<s>Welt",
    "<unk></s><pad>",
    "<S>",
    "a▁b ▁",
    "😀 Emoji 🇩🇪",
    "日本語",
    "x ,y",
    "...!!!",
    "Ä" * 50,
    "¿Qué? ¡Sí!",
    "l'été «bien»",
    "€5,99 – 3½",
    "\u00a0nbsp\u2009thin",
    "ß ẞ ﬁ",
    "e\u0301t\u00e9",
    "Jahr 2024: 12.000 Leute!",
]


# random strings are drawn from these: spaces and "▁", special tokens, combining marks, punctuation of other scripts
FUZZ = [*"aäoöuüßAÄOÖUÜ ▁<>/s!.,;:-\t\n0123456789", "\u0308", "\u0301", "<s>", "</s>", "<unk>", "<pad>", "😀", "—"]
FUZZ += ["„", "“", "\u00a0", "\u2028", "\u3002", "\uff0c", "\u2e3a", "\u058a", "\u00b7", "\u2010"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny numbers model (trained for seconds), its pages, and what PyTorch and HF tokenizers say about them."""
    need(web.node)
    tmp = tmp_path_factory.mktemp("web")
    run_dir = tmp / "run"
    # the numbers task with a test split of 100 (the built-in one holds 1000, which takes seconds to draw)
    splits = tr.numbers_task(400, 20, 100)
    for name, pairs in splits.items():
        tr.write_tsv(tmp / f"{name}.tsv", pairs)
    data = ["--data", str(tmp / "train.tsv"), "--valid", str(tmp / "valid.tsv"), "--test", str(tmp / "test.tsv")]
    steps = ["--steps", "30", "--eval-every", "0", "--max-len", "40", "--quiet"]  # max_len 40: a long text is cut soon
    assert tr.main(["train", "--out", str(run_dir), *data, *TINY, *steps]) == 0
    checkpoint = tr.checkpoints(run_dir)[-1]
    _, _, model, tokenizer = tr.load_run(checkpoint)
    f32 = web.export_web(checkpoint, tmp / "page")
    f16 = web.export_web(checkpoint, tmp / "page-f16", half=True)
    bare = tmp / "no-weights"
    web.write_page_files(bare)

    # the model with its weights rounded to float16 and back: what the float16 page computes
    half_model = tr.load_run(checkpoint)[2]
    half_model.load_state_dict({k: v.half().float() for k, v in half_model.state_dict().items()})

    seed = random.randrange(2**32)
    pairs = tr.read_tsv(run_dir / "test.tsv")
    held_out = [s for s, _ in random.Random(seed).sample(pairs, HELD_OUT)]
    # fixed inputs for the logits: a real sentence and its greedy answer, padding in both, an all-padding source
    src, _ = tr.source_ids(tokenizer, [held_out[0]], model.config.max_len)
    answer = greedy_decode(model, torch.tensor(src), 20, bos_id=1, eos_id=2)[0].tolist()
    fixed = [(src[0], answer[:12]), (src[0] + [0, 0], [1, 5, 9, 0, 0]), ([0, 0, 0], [1, 7, 8])]

    rng = random.Random(0)
    texts = made_up_sentences(rng, 250)
    texts += [unicodedata.normalize("NFD", t) for t in texts[:60]] + ODD_TEXTS
    texts += ["".join(rng.choice(FUZZ) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    corpus = made_up_sentences(random.Random(1), 2000)
    tokenizers = {split: tr.train_tokenizer(corpus, 300, split) for split in ("punctuation", "spaces")}
    return {
        "dir": run_dir,
        "checkpoint": checkpoint,
        "model": model,
        "tokenizer": tokenizer,
        "half_model": half_model,
        "page": f32["out"],
        "page_f16": f16["out"],
        "exported": {"float32": f32, "float16": f16},
        "bare": bare,
        "seed": seed,
        "held_out": held_out,
        "expected": [greedy(model, tokenizer, t) for t in held_out],
        "expected_tokens": [greedy_tokens(model, tokenizer, t) for t in held_out],
        "expected_f16": [greedy(half_model, tokenizer, t) for t in held_out],
        "fixed": fixed,
        "torch": [torch_forward(model, s, t) for s, t in fixed],
        "torch_f16": [torch_forward(half_model, s, t) for s, t in fixed],
        "texts": texts,
        "tokenizers": tokenizers,
    }


def forward_jobs(run) -> list[dict]:
    return [{"op": "forward", "src": s, "tgt": t} for s, t in run["fixed"]]


def tokenizer_jobs(run) -> list[dict]:
    jobs = []
    for tokenizer in run["tokenizers"].values():
        spec = json.loads(tokenizer.to_str())
        ids = [tokenizer.encode(t).ids for t in run["texts"]]
        jobs += [
            {"op": "encode", "tokenizer": spec, "texts": run["texts"]},
            {"op": "decode", "tokenizer": spec, "ids": ids},
        ]
    return jobs


# pre-tokenizers bpe.js must refuse, by name: it reads only the two forms translate.py writes
UNREADABLE = {
    "Whitespace": {"type": "Whitespace"},
    "ByteLevel": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "Metaspace first": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
    "Punctuation removed": {
        "type": "Sequence",
        "pretokenizers": [web.METASPACE, {"type": "Punctuation", "behavior": "Removed"}],
    },
}


def unreadable(run, name: str) -> dict:
    return json.loads(run["tokenizers"]["punctuation"].to_str()) | {"pre_tokenizer": UNREADABLE[name]}


@pytest.fixture(scope="module")
def node_results(run):
    """Every Node job, in two runs of node: the float32 page (and the tokenizers), the float16 page."""
    refused = [{"op": "tokenizer", "tokenizer": unreadable(run, name)} for name in UNREADABLE]
    jobs = forward_jobs(run) + [{"op": "translate", "texts": run["held_out"]}] + tokenizer_jobs(run) + refused
    out = web.in_node(run["page"], jobs)
    out_f16 = web.in_node(run["page_f16"], forward_jobs(run) + [{"op": "translate", "texts": run["held_out"]}])
    n, k = len(run["fixed"]), len(refused)
    return {
        "forward": out[:n],
        "translate": out[n],
        "tokenizer": out[n + 1 : -k],
        "refused": dict(zip(UNREADABLE, out[-k:], strict=True)),
        "forward_f16": out_f16[:n],
        "translate_f16": out_f16[n],
    }


# -----------------------------------------------------------------------------
# Everything Chromium is asked, in one launch: the pages from file://, bad input, the deck
# -----------------------------------------------------------------------------

LONG = "neunhundertneunundneunzigtausend " * 20  # far beyond the test model's max_len
STRANGE = "dreihundert€zwei😀und"  # two characters the vocabulary lacks


@pytest.fixture(scope="module")
def browser(run, tmp_path_factory):
    need(web.node, web.playwright_dir, web.chromium)
    from urllib.parse import quote

    page, held = run["page"], run["held_out"]
    visits = {
        # a link that translates, the jobs run in that page, then bad input typed into its box
        "link": {
            "url": web.page_url(page, "?src=" + quote(held[1])),
            "wait": "done",
            "jobs": [*forward_jobs(run), {"op": "translate", "texts": held}, *tokenizer_jobs(run)],
            "type": ["  ", LONG, STRANGE, *held[TYPED]],
        },
        "f16": {"url": web.page_url(run["page_f16"]), "jobs": [*forward_jobs(run), {"op": "translate", "texts": held}]},
        "bare": {"url": web.page_url(run["bare"], "?src=neun")},
    }
    deck = deck_with_the_page(page, tmp_path_factory.mktemp("deck"))
    if deck is not None:
        site, slide = deck
        visits["deck"] = {
            "url": (site / "index.html").as_uri(),
            "before": f"Reveal.slide({slide})",
            "frame": "web/index.html",
            "type": [held[2]],
        }
    report = web.in_chromium(list(visits.values()))
    shown = {"version": report["browserVersion"]} | dict(zip(visits, report["visits"], strict=True))
    shown["empty"], shown["long"], shown["strange"], *shown["typed"] = shown["link"]["typed"]
    n = len(CASES)
    shown["forward"], shown["translate"], shown["tokenizer"] = (
        shown["link"]["jobs"][:n],
        shown["link"]["jobs"][n],
        shown["link"]["jobs"][n + 1 :],
    )
    return shown


def deck_with_the_page(page: Path, tmp: Path) -> tuple[Path, int] | None:
    """The static deck built with this page in web/, and the index of the page's slide; None without reveal-md."""
    bs = load_module(ROOT / "talk" / "build_slides.py")
    if not (bs.REVEAL_MD).is_file():
        return None
    figures = tmp / "figures"  # stand-ins: this deck is for its one iframe
    figures.mkdir()
    for name in bs.FIGURE_NAMES:
        (figures / name).write_bytes(b"")
    bs.build_static(tmp / "dist", figures, page)
    slides = bs.split_slides(bs.read_deck())
    (slide,) = [i for i, s in enumerate(slides) if 'src="web/index.html"' in s]
    return tmp / "dist", slide


# -----------------------------------------------------------------------------
# The same numbers as PyTorch
# -----------------------------------------------------------------------------


def assert_forward_matches(got: dict, expected: dict, what: str) -> float:
    """Logits (T, V) and each layer's attention weights within TOLERANCE; returns the largest difference."""
    assert "error" not in got, f"{what}: the page's forward pass failed: {got.get('error')}"
    logits = np.array(got["logits"]).reshape(expected["logits"].shape)
    worst = float(np.abs(logits - expected["logits"]).max())
    assert worst <= TOLERANCE, f"{what}: logits differ from PyTorch's by {worst:.2e} (allowed {TOLERANCE:g})"
    for kind in ("encoder", "self", "cross"):
        for layer, (mine, theirs) in enumerate(zip(got[kind], expected[kind], strict=True)):
            diff = float(np.abs(np.array(mine).reshape(theirs.shape) - theirs).max())
            assert diff <= TOLERANCE, f"{what}: {kind} attention of layer {layer} differs by {diff:.2e}"
            worst = max(worst, diff)
    return worst


CASES = ["a held-out sentence and its greedy answer", "padding in source and target", "an all-padding source"]


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
def test_node_computes_pytorchs_logits_and_attention(run, node_results, case):
    worst = assert_forward_matches(node_results["forward"][case], run["torch"][case], f"Node, {CASES[case]}")
    print(f"Node, {CASES[case]}: largest difference from PyTorch {worst:.1e}")


def test_chromium_computes_pytorchs_logits_and_attention(run, browser):
    for case, name in enumerate(CASES):
        worst = assert_forward_matches(browser["forward"][case], run["torch"][case], f"Chromium, {name}")
        print(f"Chromium {browser['version']}, {name}: largest difference from PyTorch {worst:.1e}")


def test_greedy_tokens_match_translate_py_on_held_out_sentences(run, node_results, browser):
    expected = run["expected"]
    for where, got in (("Node", node_results["translate"]), ("Chromium", browser["translate"])):
        assert [g["tokens"] for g in got] == run["expected_tokens"], f"{where}: other tokens than greedy_decode's"
        texts = [g["text"] for g in got]
        wrong = [(s, t, e) for s, t, e in zip(run["held_out"], texts, expected, strict=True) if t != e]
        assert not wrong, (
            f"{where} translated {len(wrong)} of {len(expected)} held-out sentences otherwise than translate.py's "
            f"greedy decoding (sample seed {run['seed']}); first (source, page, translate.py): {wrong[0]}"
        )


def test_the_half_precision_page_computes_what_pytorch_computes_with_the_same_rounded_weights(
    run, node_results, browser
):
    f32, f16 = run["exported"]["float32"], run["exported"]["float16"]
    assert f16["bytes"] < 0.6 * f32["bytes"], f"float16 weights.js is {f16['bytes']} bytes, float32 {f32['bytes']}"
    for where, got in (("Node", node_results["forward_f16"]), ("Chromium", browser["f16"]["jobs"])):
        for case, name in enumerate(CASES):
            assert_forward_matches(got[case], run["torch_f16"][case], f"{where}, float16 page, {name}")
    for where, got in (("Node", node_results["translate_f16"]), ("Chromium", browser["f16"]["jobs"][len(CASES)])):
        assert [g["text"] for g in got] == run["expected_f16"], f"{where}: the float16 page's greedy answers"
    drift = max(
        float(np.abs(a["logits"] - b["logits"]).max()) for a, b in zip(run["torch"], run["torch_f16"], strict=True)
    )
    same = sum(a == b for a, b in zip(run["expected"], run["expected_f16"], strict=True))
    print(
        f"float16 weights: {f16['bytes'] / f32['bytes']:.0%} of the size; logits {drift:.1e} from float32's; "
        f"{same}/{len(run['expected'])} held-out answers unchanged"
    )


# -----------------------------------------------------------------------------
# The same tokens as Python
# -----------------------------------------------------------------------------


def test_bpe_in_javascript_gives_pythons_ids_and_text(run, node_results, browser):
    n = len(run["texts"])
    for where, results in (("Node", node_results["tokenizer"]), ("Chromium", browser["tokenizer"])):
        pairs = zip(results[::2], results[1::2], strict=True)  # (encode, decode) per tokenizer
        for (split, tokenizer), (encoded, decoded) in zip(run["tokenizers"].items(), pairs, strict=True):
            assert len(encoded) == n, f"{where}, {split}: {encoded}"
            for text, got, back in zip(run["texts"], encoded, decoded, strict=True):
                e = tokenizer.encode(text)
                assert got["ids"] == e.ids, (
                    f"{where}, pre-tokenizer {split}: {text!r} -> {got['pieces']}, Python {e.tokens}"
                )
                assert back == tokenizer.decode(e.ids), f"{where}, {split}: {e.ids} decodes to {back!r}"
    unk = run["tokenizers"]["punctuation"].token_to_id("<unk>")
    unknown = sum(r["ids"].count(unk) for r in node_results["tokenizer"][0])
    assert unknown > 10, "the test texts should hold characters the vocabulary lacks"


@pytest.mark.parametrize("name", UNREADABLE)
def test_a_tokenizer_the_page_cannot_read_is_refused_by_name(run, node_results, name, tmp_path):
    spec = unreadable(run, name)
    with pytest.raises(web.PageError, match="pre_tokenizer"):
        web.check_tokenizer(spec)
    error = node_results["refused"][name]["error"]
    assert error and "pre_tokenizer" in error, f"bpe.js read a {name} pre-tokenizer without a word"
    # and export_web says so before it writes anything
    meta, states = tr.load_checkpoint(run["checkpoint"])
    tr.save_checkpoint(tmp_path / "odd.pt", meta | {"tokenizer": json.dumps(spec)}, states)
    with pytest.raises(tr.UserError, match="pre_tokenizer"):
        web.export_web(tmp_path / "odd.pt", tmp_path / "page")
    assert not (tmp_path / "page").exists()


# -----------------------------------------------------------------------------
# The page: a link that translates, bad input, no weights, the deck
# -----------------------------------------------------------------------------


def test_a_link_fills_the_box_and_translates_on_load(run, browser):
    shown = browser["link"]
    assert shown["source"] == run["held_out"][1], "?src= did not fill the text box"
    assert shown["state"] == "done" and shown["translation"] == run["expected"][1], (
        f"the page wrote {shown['translation']!r}, translate.py {run['expected'][1]!r}"
    )
    assert shown["msPerToken"] and shown["msPerToken"] > 0 and "ms per token" in shown["timing"], shown["timing"]
    assert len(shown["targetPieces"]) >= 1 and any("cross-attention" in s for s in shown["shapes"]), shown["shapes"]
    assert shown["heatCaption"].startswith("cross-attention, layer 1, mean of 2 heads"), shown["heatCaption"]
    assert not shown["consoleErrors"] and not shown["pageErrors"], shown["consoleErrors"] + shown["pageErrors"]
    assert not shown["external"], f"the page asked the network for {shown['external']}"
    print(f"tiny page from file://: ready after {shown['loadMs']:.0f} ms; {shown['timing']}")


def test_sentences_typed_into_the_box_come_out_as_translate_py_writes_them(run, browser):
    typed = [shown["translation"] for shown in browser["typed"]]
    assert typed == run["expected"][TYPED], (
        f"typed into the page: {run['held_out'][TYPED]} (sample seed {run['seed']}); the page wrote {typed}, "
        f"translate.py {run['expected'][TYPED]}"
    )
    assert all(shown["state"] == "done" and shown["msPerToken"] > 0 for shown in browser["typed"])


def test_empty_text_asks_for_text(browser):
    shown = browser["empty"]
    assert shown["state"] == "empty" and shown["translation"] == "", shown
    assert "Nothing to translate" in shown["status"], shown["status"]


def test_text_beyond_max_len_is_cut_and_the_page_says_so(run, browser):
    shown = browser["long"]
    max_len = run["model"].config.max_len
    assert "Too long" in shown["status"] and f"cut to the first {max_len - 1} pieces" in shown["status"], shown[
        "status"
    ]
    assert len(shown["sourcePieces"]) == max_len, "the source is cut to max_len tokens"
    assert shown["translation"] == greedy(run["model"], run["tokenizer"], LONG), "translate.py cuts the same way"


def test_characters_the_vocabulary_lacks_are_shown_as_unk(run, browser):
    shown = browser["strange"]
    unknown = [p for p in shown["sourcePieces"] if p["unk"]]
    assert [p["text"] for p in unknown] == ["<unk>", "<unk>"], shown["sourcePieces"]
    assert '"€"' in unknown[0]["title"] and "<unk>" in shown["status"] and '"😀"' in shown["status"], shown["status"]
    assert shown["translation"] == greedy(run["model"], run["tokenizer"], STRANGE)


def test_a_folder_without_weights_says_so_on_the_page(browser):
    shown = browser["bare"]
    assert shown["state"] == "no-weights" and shown["statusKind"] == "error", shown
    assert "weights.js is missing" in shown["status"] and "make web" in shown["status"], shown["status"]
    assert not shown["pageErrors"], f"the page broke instead of saying so: {shown['pageErrors']}"


def test_the_static_deck_carries_the_page_and_it_translates_from_file(run, browser):
    if "deck" not in browser:
        if on_ci():
            pytest.fail("talk/node_modules/reveal-md is missing on CI")
        pytest.skip("talk/node_modules/reveal-md is missing (npm ci in talk/)")
    shown = browser["deck"]["typed"][0]
    assert shown["state"] == "done" and shown["translation"] == run["expected"][2], (
        f"inside the deck's slide the page wrote {shown['translation']!r}, translate.py {run['expected'][2]!r}"
    )
    seen = browser["deck"]
    assert not seen["pageErrors"] and not seen["external"], seen["pageErrors"] + seen["external"]


def test_a_deck_without_the_page_says_how_to_build_it(tmp_path):
    bs = load_module(ROOT / "talk" / "build_slides.py")
    (tmp_path / "site").mkdir()
    assert not bs.copy_web_page(tmp_path / "site", tmp_path / "not-built")
    text = (tmp_path / "site" / "web" / "index.html").read_text(encoding="utf-8")
    assert "make web" in text and "<script" not in text, "the frame must say how to build the page, and load nothing"


# -----------------------------------------------------------------------------
# The exporter and the command line
# -----------------------------------------------------------------------------


def test_the_page_is_self_contained_classic_scripts(run):
    page = run["page"]
    assert sorted(p.name for p in page.iterdir()) == sorted([*web.PAGE_FILES, web.WEIGHTS])
    for name in ("bpe.js", "transformer.js", "page.js", "weights.js"):
        text = (page / name).read_text(encoding="utf-8")
        for forbidden in (r"\bfetch\(", r"^\s*(import|export)\b", r"\bimport\(", "XMLHttpRequest", "https?://"):
            found = re.search(forbidden, text, re.MULTILINE)
            assert not found, f"{name} has {found[0]!r}: Chromium refuses it from file://, or it goes online"
        assert "globalThis.WebTransformer" in text, f"{name} does not add to the one global"
    assert (page / "weights.js").read_text(encoding="ascii").startswith("// Written by translation/web.py")


def test_export_refuses_to_write_into_a_folder_that_is_not_a_page(run, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(tr.UserError, match="not a page"):
        web.export_web(run["checkpoint"], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_translate_py_export_web_writes_the_page_of_a_run(run, tmp_path, capsys):
    if "export-web" not in (ROOT / "translate.py").read_text(encoding="utf-8"):
        pytest.skip("translate.py has no export-web command yet")
    out = tmp_path / "page"
    assert tr.main(["export-web", str(run["dir"]), "--out", str(out)]) == 0
    weights = (out / "weights.js").read_text(encoding="ascii")
    assert run["checkpoint"].name in weights, "a run directory without averaged.pt means its latest checkpoint"
    assert (out / "weights.js").read_bytes() == (run["page"] / "weights.js").read_bytes()
    shutil.rmtree(out)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert tr.main(["export-web", str(run["dir"]), "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a page" in err, f"expected one line saying why: {err!r}"
