"""`make bench`: the quick mode runs end to end, and every number it reports comes from what it measured.

No test here asserts a speed: timings on a shared machine prove nothing. They check that the JSON holds the
machine, the torch version and the thread count, that each median and ratio is computed from the recorded
times, that the compared models really compute the same function, and the weight copy into nn.Transformer.
"""

from __future__ import annotations

import io
import json
import statistics

import pytest
import torch
from rich.console import Console
from torch import nn

import transformer as tf
from bench import bench
from bench.torch_reference import TorchReference, to_torch_transformer


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run for the whole module: (results returned, results read back from the JSON, out dir, printout)."""
    out = tmp_path_factory.mktemp("bench")
    console = Console(file=io.StringIO(), width=160)
    results = bench.run(bench.QUICK, out, torch.device("cpu"), console)
    saved = json.loads((out / "bench_quick.json").read_text(encoding="utf-8"))
    return results, saved, out, console.file.getvalue()


def all_timed_records(saved):
    return [*saved["models"], *saved["attention"], *saved["decoding"]]


def test_json_names_the_machine_torch_version_and_threads(quick):
    results, saved, _, _ = quick
    meta = saved["meta"]
    assert meta["torch"] == torch.__version__, "the JSON must record the torch version that ran"
    assert meta["threads"] == torch.get_num_threads(), "the JSON must record the thread count of the run"
    assert isinstance(meta["cpu"], str) and meta["cpu"], "the JSON must name the CPU"
    assert meta["device"] == "cpu" and meta["quick"] is True and meta["repeats"] == bench.QUICK.repeats
    assert meta["seconds"] > 0
    assert saved == json.loads(json.dumps(results)), "the JSON on disk differs from the results returned"


def test_every_median_and_ratio_comes_from_the_recorded_times(quick):
    _, saved, _, _ = quick
    for record in all_timed_records(saved):
        times = record["times_s"]
        for name, values in times.items():
            assert len(values) == bench.QUICK.repeats, f"{name}: expected one time per repeat, got {values}"
            assert all(v > 0 for v in values), f"{name}: a measured time must be positive, got {values}"
            assert record["median_s"][name] == pytest.approx(statistics.median(values), rel=1e-12)
        for label, ratio in record["ratio"].items():
            top, bottom = label.split("/")
            expected = record["median_s"][top] / record["median_s"][bottom]
            assert ratio == pytest.approx(expected, rel=1e-12), f"ratio {label} is not median({top}) / median({bottom})"
        for name, rate in record.get("tokens_per_s", {}).items():
            work = record["tokens"] if "tokens" in record else record["batch"] * record["output_len"]
            assert rate == pytest.approx(work / record["median_s"][name], rel=1e-12), (
                f"tokens/s of {name} is not work / time"
            )


def test_models_are_compared_on_the_same_function(quick):
    _, saved, _, _ = quick
    sizes = {name for name, *_ in bench.QUICK.model_sizes}
    assert {(r["size"], r["mode"]) for r in saved["models"]} == {(s, m) for s in sizes for m in ("inference", "train")}
    for record in saved["models"]:
        assert set(record["median_s"]) == {"ours", "fused", "torch"}, (
            "expected ours, the fused stage and nn.Transformer"
        )
        assert record["tokens"] > 0 and record["parameters"] > 0
    for record in (r for r in saved["models"] if r["mode"] == "inference"):
        for other, diff in record["max_abs_logit_diff_vs_ours"].items():
            assert diff <= 1e-4, (
                f"{other} does not compute our model's logits ({record['size']}): differs by {diff:.1e}"
            )


def test_attention_and_decoding_rows_cover_the_plan_and_agree(quick):
    _, saved, _, _ = quick
    assert sorted({r["length"] for r in saved["attention"]}) == list(bench.QUICK.attention_lengths)
    assert {r["mask"] for r in saved["attention"]} == {"padding", "padding+causal"}
    for record in saved["attention"]:
        assert record["max_abs_diff"] <= 1e-5, f"fused attention disagrees at length {record['length']}"
    assert [r["output_len"] for r in saved["decoding"]] == list(bench.QUICK.decode_lengths)
    assert all(r["identical"] for r in saved["decoding"]), "the cached decoder wrote other tokens than greedy_decode"


def test_demo_training_record_is_consistent_with_its_history(quick):
    _, saved, _, _ = quick
    demo = saved["demo_training"]
    steps = [h["step"] for h in demo["history"]]
    assert steps == list(range(demo["eval_every"], demo["steps_run"] + 1, demo["eval_every"]))[: len(steps)]
    assert all(a["train_s"] < b["train_s"] for a, b in zip(demo["history"], demo["history"][1:], strict=False))
    hits = [h for h in demo["history"] if h["exact_match"] >= demo["target"]]
    assert demo["reached"] == bool(hits)
    if hits:
        assert (demo["steps"], demo["seconds"]) == (hits[0]["step"], hits[0]["train_s"])
    assert demo["best_exact_match"] == max(h["exact_match"] for h in demo["history"])


def test_precision_rows_are_computed_from_what_was_measured(quick):
    _, saved, _, printed = quick
    p = saved["precision"]
    assert set(p["median_s"]) == {"ours_fp32", "ours_bf16", "torch_fp32", "torch_bf16"}
    for label, values in p["times_s"].items():
        assert p["median_s"][label] == pytest.approx(statistics.median(values), rel=1e-12)
        assert p["gflops"][label] == pytest.approx(p["flops"] / p["median_s"][label] / 1e9, rel=1e-12)
        dtype = "bfloat16" if label.endswith("bf16") else "float32"
        assert p["fraction_of_peak"][label] == pytest.approx(p["gflops"][label] / p["matmul_peak"]["gflops"][dtype])
    peak = p["matmul_peak"]
    for dtype, seconds in peak["median_s"].items():
        assert peak["gflops"][dtype] == pytest.approx(2 * peak["n"] ** 3 / seconds / 1e9, rel=1e-12)
    # the counted FLOPs: 6 per parameter per target token, give or take attention's products (the model has the
    # same source and target lengths, and the embedding lookups cost no products)
    per_token = p["flops_per_target_token"]
    assert 0.8 * 6 * p["parameters"] <= per_token <= 1.5 * 6 * p["parameters"], (per_token, p["parameters"])
    for label, diff in p["bf16_logit_rel_diff_vs_fp32"].items():
        assert diff < 2**-5, f"{label}'s bfloat16 logits are {diff:.1%} off its float32 ones"
    assert "matmul peak" in printed.lower() and "bfloat16 autocast" in printed
    assert any("nn.Transformer's under the same autocast" in g["goal"] for g in saved["goals"])


def test_tables_and_figure_are_written(quick):
    _, _, out, printed = quick
    figure = out / "bench_quick_attention.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the figure is not a PNG"
    for title in ("torch.nn.Transformer", "attention alone", "greedy decoding", "demo training"):
        assert title in printed, f"the printout has no {title!r} section"


def test_take_turns_warms_up_then_alternates_the_order():
    calls = []
    candidates = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = bench.take_turns(candidates, warmup=1, repeats=3, device=torch.device("cpu"))
    assert calls == list("abc" + "abc" + "cba" + "abc"), f"unexpected call order {calls}"
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3, "c": 3}


@pytest.mark.parametrize(
    "ours,torch_time,met", [(1.10, 1.0, True), (1.20, 1.0, False)], ids=["within-1.15x", "beyond-1.15x"]
)
def test_goals_are_judged_from_the_measured_ratio(ours, torch_time, met):
    record = {"size": "base", "mode": "train"} | bench.summarise(
        {"ours": [ours], "torch": [torch_time]}, {"ours/torch": ("ours", "torch")}
    )
    decoding = {"output_len": 16, "identical": True} | bench.summarise(
        {"plain": [1.0], "cached": [1.0]}, {"plain/cached": ("plain", "cached")}
    )
    goals = bench.goals({"models": [record], "decoding": [decoding], "meta": {"quick": True}})
    assert len(goals) == 1 and goals[0]["met"] is met, goals
    assert goals[0]["measured"] == f"{ours / torch_time:.2f}x"


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--threads", "0"], "expected a positive integer"),
        (["--bogus"], "unrecognized arguments"),
        (["--device", "tpu"], "invalid choice"),
    ],
    ids=["threads-zero", "unknown-flag", "device"],
)
def test_bad_flags_give_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_gives_one_line_and_exit_2(capsys):
    assert bench.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not available" in err, err


# -- bench/torch_reference.py ---------------------------------------------------------------------------------


def reference_model(dropout=0.0):
    torch.manual_seed(0)
    config = tf.TransformerConfig(11, 11, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=dropout, max_len=32)
    return tf.Transformer(config).double()


def test_to_torch_transformer_puts_dropout_only_where_the_paper_does():
    body = to_torch_transformer(reference_model(dropout=0.1))
    assert isinstance(body, nn.Transformer) and body.encoder.layers[0].self_attn.batch_first
    assert isinstance(body.encoder.norm, nn.Identity) and isinstance(body.decoder.norm, nn.Identity), (
        "nn.Transformer's extra final LayerNorms must be removed: the paper has none"
    )
    for layer in [*body.encoder.layers, *body.decoder.layers]:
        assert not layer.norm_first, "the paper is post-LN"
        assert isinstance(layer.dropout, nn.Identity), "no dropout between the feed-forward linears (Eq. (2))"
        attentions = [layer.self_attn] + ([layer.multihead_attn] if hasattr(layer, "multihead_attn") else [])
        assert all(a.dropout == 0.0 for a in attentions), "the paper drops no attention weights"
        residual = [m for name, m in layer.named_children() if name.startswith("dropout") and name != "dropout"]
        assert residual and all(d.p == 0.1 for d in residual), "each sub-layer output gets P_drop = 0.1 (§5.4)"


def test_to_torch_transformer_copies_rather_than_shares_weights():
    model = reference_model()
    body = to_torch_transformer(model)
    ours_ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ours_ids for p in body.parameters()), "the copy shares a Parameter with our model"
    q_weight = model.encoder.layers[1].self_attn.w_q.weight
    assert torch.equal(body.encoder.layers[1].self_attn.in_proj_weight[:16], q_weight), "W^Q must lead in_proj_weight"
    assert torch.equal(TorchReference(model).tgt_embed.weight, model.tgt_embed.weight)


@pytest.mark.parametrize("nested", [True, False], ids=["nested-tensor", "no-nested-tensor"])
def test_encoder_memory_matches_at_real_positions_and_padding_as_documented(nested):
    model = reference_model().eval()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    body = to_torch_transformer(model, enable_nested_tensor=nested).eval()
    with torch.no_grad():
        x = model.pos_encoding(model.src_embed(src))
        ours = model.encoder(x, tf.padding_mask(src, 0))
        theirs = body.encoder(x, src_key_padding_mask=src == 0)
    real = (src != 0)[..., None]
    diff = ((ours - theirs) * real).abs().max().item()
    assert diff <= 1e-10, f"nn.Transformer's encoder differs from ours at real positions by {diff:.1e}"
    padded = theirs[1, 2:]
    if nested:
        assert torch.equal(padded, torch.zeros_like(padded)), "the docstring says padded positions come back as zeros"
    else:
        assert (ours[1, 2:] - padded).abs().max().item() <= 1e-10, "without nested tensors every position should match"
