"""The README never claims what the code does not do: its Python runs, its commands exist, its example output has the
demo's real format."""

from __future__ import annotations

import re
import subprocess

import torch

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_runs_and_its_shape_comments_hold():
    (block,) = fenced("python")
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (2, 5, 1000), "README says logits are (B, T, tgt_vocab_size)"
    out = namespace["out"]
    assert out.shape[0] == 2 and out.shape[1] <= 11 and (out[:, 0] == 1).all(), "README says (B, <= 11), from bos_id"
    assert namespace["loss"].ndim == 0


def test_readme_make_targets_exist():
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    targets = set(re.findall(r"make (\S+)", help_text))
    mentioned = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README)) | set(
        re.findall(r"^make ([a-z][a-z0-9-]*)", README, re.M)
    )
    missing = mentioned - targets
    assert not missing, f"the README mentions make targets that `make help` does not list: {sorted(missing)}"
    assert {"demo", "test"} <= mentioned


def test_readme_demo_line_has_the_demo_format():
    (text,) = [b for b in fenced("text") if b.startswith("exact match")]
    assert re.fullmatch(r"exact match \d+\.\d% \(\d+/1000\) after \d+\.\d s of training\n", text)
    source = (ROOT / "transformer.py").read_text()
    assert 'f"exact match {100 * hits / N_TEST:.1f}% ({hits}/{N_TEST}) after {seconds:.1f} s of training"' in source


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^(make \w+)\s+#", fenced("bash")[0], flags=re.M)
    assert commands == ["make demo", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call the README's test command"


def test_readme_translate_line_has_the_evaluate_format():
    from tests.test_translate import CLOSING_LINE

    (text,) = [b for b in fenced("text") if b.startswith("BLEU")]
    assert CLOSING_LINE.fullmatch(text.strip()), (
        f"the README's make translate line is not what evaluate prints: {text!r}"
    )


def test_readme_multi30k_line_is_the_run_the_slides_show():
    import json

    from tests.test_translate import CLOSING_LINE

    (text,) = [b.strip() for b in fenced("text") if b.startswith("Multi30k test2016")]
    assert CLOSING_LINE.fullmatch(text), f"the README's make translate-m30k line is not what evaluate prints: {text!r}"
    run = json.loads((ROOT / "talk" / "m30k.json").read_text(encoding="utf-8"))
    numbers = (
        f"BLEU {run['test2016']['bleu']:.1f} (sacreBLEU, cased), {run['test2016']['bleu_lowercase']:.1f} lowercased"
    )
    assert numbers in text and f"after {run['train_minutes']:.1f} min" in text, (
        "the README's Multi30k result is not the run in talk/m30k.json (the slides' run)"
    )
