"""`python transformer.py`: the demo's command line."""

from __future__ import annotations

import re

import pytest
import torch


def test_demo_trains_and_prints_the_promised_last_line(tf, capsys):
    assert tf.main(["--steps", "20", "--examples", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"exact match \d+\.\d% \(\d+/1000\) after \d+\.\d s of training", lines[-1]), lines[-1]


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--task", "sort"], "invalid choice: 'sort'"),
        (["--steps", "0"], "expected a positive integer, got '0'"),
        (["--steps", "ten"], "expected a positive integer, got 'ten'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--examples", "-3"], "expected an integer >= 0, got '-3'"),
    ],
    ids=["task", "steps-zero", "steps-word", "device", "unknown-flag", "examples-negative"],
)
def test_bad_flags_give_one_line_and_exit_2(tf, capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        tf.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and words in err, f"expected one line naming the problem, got: {err!r}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_gives_one_line_and_exit_2(tf, capsys):
    assert tf.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "device 'cuda' is not available" in err, err
