"""The model in a browser: a folder that translates offline, opened by double-click (translate.py export-web).

    export_web("runs/numbers/averaged.pt", Path("web"))   # web/index.html, the page's scripts, and weights.js
    python -m translation.web measure                      # load and decoding time in headless Chromium

The page's sources live in translation/web/ and are copied as they are: index.html, style.css, and three classic
scripts that each add to one global, WebTransformer (Chromium runs neither fetch() nor ES modules from file://):
bpe.js, the run's BPE tokenizer written for the browser; transformer.js, the forward pass of transformer.py's model
written for one sentence at a time; page.js, what the page shows. The one file written here is weights.js: the
config, the tokenizer JSON, and every tensor as little-endian float32 (or float16 with half=True) in one base64
string, with its name, shape and byte offset, the way llm-viz stores its weights. No step runs at load but reading
that string. tests/test_web.py holds the page to PyTorch: logits and attention weights, greedy tokens, BPE ids.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STATIC = HERE / "web"  # the page's sources, copied as they are
DRIVER = HERE / "web_driver.cjs"  # runs a page's scripts in Node or headless Chromium (tests, measurements)
ROOT = HERE.parent
PAGE_FILES = ("index.html", "style.css", "bpe.js", "transformer.js", "page.js")
WEIGHTS = "weights.js"
FORMAT = 1
ALIGN = 8  # every tensor starts at a multiple of 8 bytes, so the page can view float32 data in place

# What bpe.js reads: the two pre-tokenizers of translate.py's --pre-tokenizer, nothing else
METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
PUNCTUATION = {"type": "Punctuation", "behavior": "Isolated"}


class PageError(ValueError):
    """A checkpoint the page cannot run, said in one line."""


def check_tokenizer(spec: dict) -> None:
    """Refuse, by name, a tokenizer JSON that bpe.js would not read the way HF tokenizers does."""
    pre = spec.get("pre_tokenizer")
    forms = [METASPACE, {"type": "Sequence", "pretokenizers": [METASPACE, PUNCTUATION]}]
    if pre not in forms:
        raise PageError(
            f"the tokenizer's pre_tokenizer is {json.dumps(pre, ensure_ascii=False)}; the page reads Metaspace, "
            "alone or followed by Punctuation (isolated), as translate.py writes them"
        )
    model = spec.get("model", {})
    wanted = {
        "type": "BPE",
        "dropout": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
    }
    for key, value in wanted.items():
        if model.get(key, value) != value:
            raise PageError(f"the tokenizer's model.{key} is {model.get(key)!r}; the page reads {value!r}")
    if spec.get("normalizer") != {"type": "NFC"} or spec.get("post_processor") is not None:
        raise PageError("the tokenizer must normalise with NFC alone and have no post-processor, as translate.py's")
    if (spec.get("decoder") or {}).get("type") != "Metaspace":
        raise PageError(f"the tokenizer's decoder is {spec.get('decoder')}; the page decodes Metaspace")


def tensors_of(model: torch.nn.Module, half: bool) -> tuple[list[tuple[str, torch.Tensor]], dict[str, str]]:
    """The state dict's tensors, each stored once: a tied weight (the shared embedding, the output projection) is
    an alias of the first name that holds it."""
    stored: list[tuple[str, torch.Tensor]] = []
    aliases: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        value = tensor.detach().to("cpu", torch.float32)
        if half:
            biggest = value.abs().max().item() if value.numel() else 0.0
            if biggest > torch.finfo(torch.float16).max:
                raise PageError(f"{name} holds {biggest:.3g}, beyond float16's range: export without --half")
            value = value.half()
        stored.append((name, value.contiguous()))
    return stored, aliases


def weights_script(run: dict, tensors: list[tuple[str, torch.Tensor]]) -> str:
    """weights.js: the run as one object literal assigned to WebTransformer.run; the data one base64 string."""
    blob = bytearray()
    index = []
    for name, tensor in tensors:
        blob += bytes(-len(blob) % ALIGN)
        index.append({"name": name, "shape": list(tensor.shape), "offset": len(blob)})
        blob += tensor.numpy().astype("<f2" if tensor.dtype == torch.float16 else "<f4").tobytes()  # little-endian
    body = run | {"tensors": index, "data": base64.b64encode(bytes(blob)).decode("ascii")}
    # ensure_ascii: the file reads the same whatever charset a browser assumes for it
    return (
        "// Written by translation/web.py (translate.py export-web): the model and tokenizer of one checkpoint.\n"
        "(globalThis.WebTransformer = globalThis.WebTransformer || {}).run = "
        + json.dumps(body, ensure_ascii=True, separators=(",", ":"))
        + ";\n"
    )


def write_page_files(out: Path) -> None:
    """The page without its weights: what export_web writes before weights.js."""
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copy2(STATIC / name, out / name)


def export_web(checkpoint: str | Path, out: Path, half: bool = False) -> dict:
    """Write the page for a checkpoint file (or a run directory: its latest checkpoint) to the folder out:
    index.html, style.css, bpe.js, transformer.js, page.js and weights.js. half=True stores the weights as float16,
    half the size; the page computes in float32 either way. Returns what was written. A checkpoint the page cannot
    run, or an out that is not a page, raises translate.py's UserError (one line on the command line)."""
    from translate import UserError  # here, not at the top: translate.py imports this module for export-web

    try:
        return write_page(checkpoint, Path(out), half)
    except PageError as error:
        raise UserError(str(error)) from None


def write_page(checkpoint: str | Path, out: Path, half: bool) -> dict:
    from translate import load_run

    if out.exists() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise PageError(f"{out} exists and is not a page written before; not writing into it")
    path, meta, model, tokenizer = load_run(checkpoint)
    spec = json.loads(tokenizer.to_str())
    check_tokenizer(spec)
    config = meta["config"]
    if config["src_vocab_size"] != config["tgt_vocab_size"]:
        raise PageError("the page runs models with one shared vocabulary, as translate.py trains them")
    tensors, aliases = tensors_of(model, half)
    if aliases.get("generator.weight") != "tgt_embed.embedding.weight":
        raise PageError("the output projection must be the target embedding (§3.4), as transformer.py ties them")
    run = {
        "format": FORMAT,
        "source": str(path),
        "config": config,
        "averaged": meta.get("averaged", []),
        "step": meta.get("step"),
        "dtype": "float16" if half else "float32",
        "aliases": aliases,
        "tokenizer": spec,
    }
    script = weights_script(run, tensors)
    write_page_files(out)
    tmp = out / f".{WEIGHTS}.tmp"
    tmp.write_text(script, encoding="ascii")
    tmp.replace(out / WEIGHTS)  # a page never sees half a weights.js
    parameters = sum(t.numel() for _, t in tensors)
    return {
        "out": out,
        "checkpoint": path,
        "dtype": run["dtype"],
        "parameters": parameters,
        "bytes": len(script),
        "megabytes": len(script) / 1e6,
    }


# -----------------------------------------------------------------------------
# Running a page's scripts in Node or headless Chromium (tests/test_web.py, and `measure` below)
# -----------------------------------------------------------------------------


class MissingTool(RuntimeError):
    """node, talk/node_modules/playwright-core or Chromium is not there: what is missing and how to get it."""


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise MissingTool("node is not installed (Node.js 18 or newer)")
    return found


def playwright_dir() -> Path:
    found = ROOT / "talk" / "node_modules" / "playwright-core"
    if not (found / "package.json").is_file():
        raise MissingTool("talk/node_modules/playwright-core is missing (run `npm ci --omit=optional` in talk/)")
    return found


def chromium() -> str:
    """Debian's chromium, found as the deck's tools find it (talk/build_slides.py, $CHROMIUM)."""
    sys.path.insert(0, str(ROOT / "talk"))
    try:
        import build_slides
    finally:
        sys.path.pop(0)
    try:
        return build_slides.find_chromium()
    except build_slides.MissingTool as error:
        raise MissingTool(str(error)) from None


def run_driver(args: list[str], request: dict, timeout: float = 180) -> dict:
    done = subprocess.run(
        ["nice", "-n", "10", node(), str(DRIVER), *args],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(f"web_driver.cjs {args[0]} failed: {done.stderr.strip()[-2000:] or 'no output'}")
    return json.loads(done.stdout)


def in_node(page: Path, jobs: list[dict]) -> list:
    """Run jobs (see web_driver.cjs) with the page's scripts in Node; one result per job."""
    return run_driver(["node", str(page)], {"jobs": jobs})["jobs"]


def in_chromium(visits: list[dict]) -> dict:
    """Open each visit's file:// URL in one headless Chromium and report what the page showed and the jobs' results."""
    return run_driver(["chromium", chromium(), str(playwright_dir())], {"visits": visits})


def page_url(page: Path, query: str = "") -> str:
    return (page.resolve() / "index.html").as_uri() + query


# -----------------------------------------------------------------------------
# Measuring: randomly initialised models of the two sizes, exported through export_web, timed in Chromium
# -----------------------------------------------------------------------------

SIZES = {
    # name: (d_model, h, N, d_ff, vocabulary): the Multi30k recipe (translate.py's RECIPES["m30k"]) and the numbers task's
    "Multi30k": (256, 8, 3, 512, 8000),
    "numbers": (64, 4, 2, 256, 300),
}
SENTENCE = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."


def random_checkpoint(path: Path, size: str, seed: int = 0) -> Path:
    """A checkpoint of an untrained model of the given size, with a BPE vocabulary of exactly that size."""
    import random
    from dataclasses import asdict

    import translate
    from transformer import Transformer, TransformerConfig

    d_model, heads, layers, d_ff, vocabulary = SIZES[size]
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghklmnprstvwz" for b in ["a", "e", "i", "o", "u", "ei", "au", "ä", "ü"]]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    texts = [" ".join(rng.choice(words) for _ in range(10)) + "." for _ in range(4000)] + [SENTENCE]
    tokenizer = translate.train_tokenizer(texts, vocabulary)
    if tokenizer.get_vocab_size() != vocabulary:
        raise RuntimeError(f"the made-up text gave {tokenizer.get_vocab_size()} pieces, not {vocabulary}")
    config = TransformerConfig(vocabulary, vocabulary, d_model, heads, layers, d_ff, dropout=0.0, max_len=128)
    torch.manual_seed(seed)
    model = Transformer(config)
    meta = {"config": asdict(config), "tokenizer": tokenizer.to_str(), "dtype": "float32", "step": 0}
    translate.save_checkpoint(path, meta, {"model": model.state_dict()})
    return path


def measure(repeats: int = 3) -> list[dict]:
    """Per size and dtype: weights.js's size, the time from opening the page to its model being ready, and the
    milliseconds per token of greedy decoding: the page's own first translation (as #timing shows it), then the
    best of `repeats` more (a random model writes 2 S + 10 tokens)."""
    from urllib.parse import quote

    rows = []
    with tempfile.TemporaryDirectory(prefix="web-measure-") as tmp:
        tmp = Path(tmp)
        visits = []
        for size in SIZES:
            checkpoint = random_checkpoint(tmp / f"{size}.pt", size)
            for half in (False, True):
                page = tmp / f"{size}-{'f16' if half else 'f32'}"
                info = export_web(checkpoint, page, half=half)
                rows.append({"size": size, "dtype": info["dtype"], "megabytes": info["megabytes"]})
                rows[-1]["parameters"] = info["parameters"]
                visits.append(
                    {
                        "url": page_url(page, "?src=" + quote(SENTENCE)),  # the page translates it on load
                        "wait": "done",
                        "jobs": [{"op": "time", "text": SENTENCE, "repeats": repeats}],
                    }
                )
        report = in_chromium(visits)
    for row, visit in zip(rows, report["visits"], strict=True):
        timing = visit["jobs"][0]
        row |= {
            "load_ms": visit["loadMs"],
            "page_ms_per_token": visit["msPerToken"],
            "page_wall_ms": visit["wallMs"],
            "ms_per_token": timing["msPerToken"],
            "steps": timing["steps"],
            "encoder_ms": timing["encoderMs"],
            "chromium": report["browserVersion"],
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m translation.web", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("measure", help="load time and ms per token of random models of both sizes, Chromium")
    m.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    console = Console()
    try:
        start = time.perf_counter()
        rows = measure(args.repeats)
    except MissingTool as error:
        print(f"translation/web.py: {error}", file=sys.stderr)
        return 2
    table = Table(title=f"the page in headless Chromium {rows[0]['chromium']}, from file://, random models")
    columns = ("model", "weights", "weights.js", "ready after", "ms/token, page", "ms/token, best", "encoder")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(
            f"{r['size']}, {r['parameters'] / 1e6:.2f} M",
            r["dtype"],
            f"{r['megabytes']:.1f} MB",
            f"{r['load_ms']:.0f} ms",
            f"{r['page_ms_per_token']:.2f}",
            f"{r['ms_per_token']:.2f}",
            f"{r['encoder_ms']:.1f} ms",
        )
    console.print(table)
    sizes = "; ".join(f"{k}: d_model {d}, h {h}, N {n}, d_ff {f}, V {v}" for k, (d, h, n, f, v) in SIZES.items())
    console.print(f"{sizes}. Greedy over {rows[0]['steps']} tokens (2 S + 10) of one sentence.", style="dim")
    console.print(f"measured in {time.perf_counter() - start:.0f} s", style="dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
