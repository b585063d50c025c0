"""seeds.py: one configuration over several seeds, mean and spread of the final metrics."""

from __future__ import annotations

import csv

import pytest
from conftest import device_args, load_script

SEEDS = load_script("seeds.py")
TINY = [
    "--eval_every=1",
    "--dataset=mnist-sample",
    "--hidden=16",
    "--epochs=1",
    "--batch_size=500",
    "--eval_samples=200",
]


def test_two_seeds_give_rows_mean_and_spread(tmp_path, capfd):
    out = tmp_path / "study"
    args = ["GAN-MNIST.py", "--seeds", "0,1", "--out", str(out), "--", *TINY, f"--data_dir={tmp_path}", *device_args()]
    rows = SEEDS.main(args)
    assert [r["seed"] for r in rows] == [0, 1, "mean", "std"]
    fid = [rows[0]["fid"], rows[1]["fid"]]
    assert fid[0] != fid[1]  # the seeds really differ
    assert rows[2]["fid"] == pytest.approx(sum(fid) / 2) and rows[3]["fid"] > 0
    assert "share_0" in rows[2]
    with open(out / "seeds.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    text = (out / "seeds.md").read_text()
    assert "| mean |" in text and "| std |" in text and "share_9" in text
    # rerunning resumes the finished runs instead of training again
    SEEDS.main(args)
    assert "Run already has 1 epochs" in capfd.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["NOPE.py"], "is not a training script"),
        (["GAN-MNIST.py", "--seeds", "a,b"], "must be comma-separated integers"),
        (["GAN-MNIST.py", "--", "--seed=3"], "is set by seeds.py"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        SEEDS.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
