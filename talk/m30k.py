"""Multi30k on the slides: what `make translate-m30k` trained, kept in talk/m30k.json (committed).

The run takes half an hour, so the deck does not train it: after `make translate-m30k`, this script reads the run
and writes what the slides show into one JSON file, from which `talk/figures.py` draws the figure and
`talk/build_slides.py update` writes the slide's tables.

    python talk/m30k.py runs/m30k      # reads runs/m30k/averaged.pt, test2016.json and metrics.jsonl

It keeps: the test2016 scores and signatures of `evaluate --json`, the training time and steps, the first EXAMPLES
test sentences translated with beam 4 (the first ones, not chosen ones), the cross-attention of the first of them,
and from validation during training (greedy, the first 200 validation sentences) BLEU and how many answers loop at
each validation step, with one looping answer as it was written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TALK = Path(__file__).resolve().parent
ROOT = TALK.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import translate as tr  # noqa: E402
from transformer import OneLineParser  # noqa: E402
from translation import decoding  # noqa: E402

SNAPSHOT = TALK / "m30k.json"
EXAMPLES = 4
PROG = "talk/m30k.py"


def snapshot(run: Path, out: Path = SNAPSHOT, examples: int = EXAMPLES) -> dict:
    """Read a finished `make translate-m30k` run and write what the slides show to `out`."""
    averaged = run / "averaged.pt"
    scores_file = run / "test2016.json"
    for needed in (averaged, scores_file, run / "metrics.jsonl", run / "test.tsv"):
        if not needed.is_file():
            raise tr.UserError(f"{needed}: missing; run `make translate-m30k` first")
    _, meta, model, tokenizer = tr.load_run(averaged)
    scores = json.loads(scores_file.read_text(encoding="utf-8"))
    pairs = tr.read_tsv(run / "test.tsv")[:examples]
    sources = [s for s, _ in pairs]
    translations = tr.translate_texts(model, tokenizer, sources, beam=4, alpha=0.6)
    source_pieces, target_pieces, cross = decoding.cross_attention(model, tokenizer, sources[0], beam=4, alpha=0.6)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    validation = [
        {k: r[k] for k in ("step", "valid_bleu", "valid_looping", "valid_loop_example") if k in r}
        for r in records
        if "valid_bleu" in r
    ]
    config = meta["config"]
    data = {
        "model": {k: config[k] for k in ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "src_vocab_size")},
        "averaged": meta.get("averaged", []),
        "train_minutes": round(meta.get("train_seconds", 0.0) / 60, 1),
        "test2016": {
            k: scores[k]
            for k in ("bleu", "bleu_lowercase", "chrf", "bleu_signature", "bleu_lowercase_signature", "looping", "n")
        }
        | {"beam": scores["beam"], "alpha": scores["alpha"]},
        "examples": [
            {"source": s, "reference": t, "translation": h} for (s, t), h in zip(pairs, translations, strict=True)
        ],
        "attention": {"source": source_pieces, "target": target_pieces, "cross": cross.tolist()},
        "validation": validation,
    }
    out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return data


def load(path: Path = SNAPSHOT) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Keep what make translate-m30k trained for the slides.")
    parser.add_argument("run", type=Path, help="the run directory of make translate-m30k (runs/m30k)")
    parser.add_argument("--out", type=Path, default=SNAPSHOT, help="the JSON file (default: talk/m30k.json)")
    args = parser.parse_args(argv)
    try:
        data = snapshot(args.run, args.out)
    except tr.UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: test2016 BLEU {data['test2016']['bleu']:.1f}, {len(data['examples'])} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
