"""Constants, --name=value overrides and their errors (common/config.py)."""

import json
import re

import pytest
from conftest import load_script, run_script

from common import config
from common.domains import Choice, Int, Real


def namespace() -> dict:
    domains = {"EPOCHS": Int(1), "LR": Real("(0, inf)"), "DATASET": Choice("mnist", "fake")}
    return {"EPOCHS": 5, "LR": 1e-3, "DOWNLOAD": True, "DATASET": "mnist", "lower": 1, "_PRIVATE": 2,
            "__annotations__": domains}  # fmt: skip


def test_overrides_are_converted_to_the_default_type():
    ns = namespace()
    cfg = config.parse(ns, ["--epochs=7", "--lr=0.5", "--download=false", "--dataset=fake"])
    assert cfg == {"EPOCHS": 7, "LR": 0.5, "DOWNLOAD": False, "DATASET": "fake"}
    assert ns["EPOCHS"] == 7 and ns["DOWNLOAD"] is False  # written back into the script's globals


@pytest.mark.parametrize(
    "arg, words",
    [
        ("--epochs=two", "expects an integer"),
        ("--lr=fast", "expects a number"),
        ("--download=maybe", "true or false"),
        ("--epoch=3", "unknown option --epoch; valid options: --epochs, --lr, --download, --dataset"),
        ("epochs=3", "--name=value"),
        ("--dataset=cifar", "not one of: mnist, fake"),
    ],
)
def test_bad_overrides_exit_2_with_one_line(arg, words, capsys):
    with pytest.raises(SystemExit) as exc:
        config.setup(namespace(), [arg])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "arg, line",
    [
        ("--epochs=0", "error: --epochs=0 is not an integer >= 1"),
        ("--lr=0", "error: --lr=0.0 is not a finite number > 0"),
        ("--lr=nan", "error: --lr=nan is not a finite number > 0"),
        ("--lr=-inf", "error: --lr=-inf is not a finite number > 0"),
    ],
)
def test_values_outside_their_domain_are_one_line_naming_value_and_domain(arg, line, capsys):
    with pytest.raises(SystemExit) as exc:
        config.setup(namespace(), [arg])
    assert exc.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_default_outside_its_domain_is_refused_too(capsys):
    ns = {**namespace(), "EPOCHS": -1}  # e.g. WORKERS = os.cpu_count() on a box where it says 0
    with pytest.raises(SystemExit):
        config.setup(ns, [])
    assert "--epochs=-1 is not an integer >= 1" in capsys.readouterr().err


def test_comments_and_groups_are_read_from_the_source(tmp_path):
    src = tmp_path / "s.py"
    src.write_text('# --- data ---\nDATASET = "mnist"  # which data # set\n# --- run ---\nSEED: int = 3  # the seed\n')
    assert config.comments(src) == {"DATASET": ("which data # set", "data"), "SEED": ("the seed", "run")}


def test_script_help_lists_every_constant_with_comment():
    result = run_script("VAE-MNIST.py", "--help")
    assert result.returncode == 0
    for line in (
        "--latent_dim=20",
        "size of z",
        "--dataset='mnist'",
        "[optimisation]",
        "--resume=True",
        "--amp='auto'",
    ):
        assert line in result.stdout
    options = [line for line in result.stdout.splitlines() if line.startswith("  --")]
    assert len(options) == len(config.constants(vars(load_script("VAE-MNIST.py"))))
    columns = {re.match(r"  --\S+ +", line).end() for line in options}  # where the comments start
    assert len(columns) == 1, "the comments are not aligned"


def test_script_rejects_bad_input_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    for args, words in [
        (["--epochs=0"], "--epochs=0 is not an integer >= 1"),
        (["--batch_size=x"], "expects an integer"),
        (["--dataset=cifar"], "not one of"),
        (["--device=cuda:7"], "--device=cuda:7"),
        (["--colour=red"], "unknown option --colour"),
        (["--eval_samples=0"], "--eval_samples=0 is too few: the scores need at least 6 images"),
        (["--eval_samples=1"], "--eval_samples=1 is too few"),
        (["--eval_samples=5"], "--eval_every=0 turns evaluation off"),
    ]:
        result = run_script("GAN-MNIST.py", f"--out_dir={out}", *args)
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()


def test_config_json_records_the_effective_config(tmp_path, mnist_root):
    out = tmp_path / "run"
    result = run_script(
        "VAE-MNIST.py",
        f"--data_dir={mnist_root}",
        f"--out_dir={out}",
        "--epochs=1",
        "--batch_size=64",
        "--beta=0.5",
        "--eval_every=0",
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["beta"] == 0.5 and saved["epochs"] == 1 and saved["dataset"] == "mnist"
    assert saved["device"].startswith("cpu") and saved["torch"]
    assert re.search(r"^  beta +=  ?0\.5$", result.stdout, re.MULTILINE)  # printed at start too


def test_a_renamed_constant_keeps_its_old_name_and_says_so_once(capsys):
    config._SAID.clear()  # said once per process: from here
    ns = {"EVAL_SAMPLES": 10000, "EPOCHS": 1}
    assert config.parse(ns, ["--fid_samples=500"])["EVAL_SAMPLES"] == 500
    saved = config.upgrade({"FID_SAMPLES": 2000, "EPOCHS": 1}, ns)  # an old checkpoint's config
    assert saved == {"EVAL_SAMPLES": 2000, "EPOCHS": 1}
    out = capsys.readouterr().out
    assert out.count("FID_SAMPLES (--fid_samples) is now called EVAL_SAMPLES") == 1, out


def test_eval_samples_least_is_what_the_k_nn_scores_need(capsys):
    from common import prdc

    assert config.MIN_EVAL_SAMPLES == prdc.K + 1  # a ball's radius is the distance to the k-th other point
    config.check_eval_samples({"EVAL_SAMPLES": 6, "EVAL_EVERY": 1})
    config.check_eval_samples({"EVAL_SAMPLES": 0, "EVAL_EVERY": 0})  # no evaluation: any count
    with pytest.raises(SystemExit) as exc:
        config.check_eval_samples({"EVAL_SAMPLES": 5, "EVAL_EVERY": "auto"})
    assert exc.value.code == 2 and "--eval_every=0 turns evaluation off" in capsys.readouterr().err
    celeba = config.declared(vars(load_script("DCGAN-CelebA.py")))["EVAL_SAMPLES"]  # its FID: 0 turns it off
    assert celeba.problem(0) is None and celeba.problem(2) is None and celeba.problem(1) is not None
