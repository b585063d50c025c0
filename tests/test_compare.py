"""compare.py on real tiny runs, and the metrics files every VAE/GAN run writes."""

import csv
import json

import pytest
import torch
from conftest import ROOT, make_idx_dataset, run_script
from PIL import Image

import compare

TINY = ["--eval_every=1", "--epochs=1", "--batch_size=64", "--eval_samples=300", "--iwae_images=50"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conditional GAN and a VAE, one epoch each on tiny real-digit data, in one outputs folder."""
    root = tmp_path_factory.mktemp("runs")
    data_dir = make_idx_dataset(root / "data")
    outputs = root / "outputs"
    for script, name, extra in (("GAN-MNIST.py", "cgan", ["--conditional=true"]), ("VAE-MNIST.py", "vae", [])):
        args = TINY if script == "VAE-MNIST.py" else TINY[:3]
        result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={outputs / name}", *args, *extra)
        assert result.returncode == 0, result.stderr
        assert "metrics epoch 1:" in result.stdout
    return outputs, data_dir


def test_runs_write_metrics_files(runs):
    outputs, data_dir = runs
    for name in ("cgan", "vae"):
        for picture in ("metrics.png", "pixel_histogram.png"):
            with Image.open(outputs / name / picture) as im:
                assert im.size[0] > 300
        (row,) = rows(outputs / name / "metrics.csv")
        assert {"fid", "fid_floor", "kid", "kid_floor", "is", "is_real", "classes_covered", "entropy"} <= set(row)
        assert {"precision", "recall", "density", "coverage", "coverage_floor", "density_floor"} <= set(row)
        assert float(row["fid"]) > float(row["fid_floor"]) >= 0
        state = torch.load(outputs / name / "checkpoints" / "last.pt", weights_only=False)
        assert state["metrics"][0]["epoch"] == 1
    assert "label_acc" in rows(outputs / "cgan" / "metrics.csv")[0]
    vae_row = rows(outputs / "vae" / "metrics.csv")[0]
    assert float(vae_row["test_iwae"]) <= float(vae_row["test_neg_elbo"]) + 1  # IWAE is the tighter bound
    assert (data_dir / "evaluators" / "mnist.pt").exists()


def test_every_training_run_writes_the_page_of_its_outputs_folder(runs):
    outputs, _ = runs  # before any compare.py: what the two training runs left
    page = (outputs / "index.html").read_text()
    assert ">cgan<" in page and ">vae<" in page  # the second run's page shows the first run too
    assert "cgan/samples/epoch_001.png" in page and "vae/samples/epoch_001.png" in page


def test_compare_writes_a_row_and_a_picture_per_run(runs, tmp_path):
    outputs, _ = runs
    (outputs / "bare").mkdir(exist_ok=True)  # a run that died early: only config.json
    (outputs / "bare" / "config.json").write_text(json.dumps({"script": "GAN-MNIST.py", "dataset": "mnist"}))
    result = run_script("compare.py", str(outputs))
    assert result.returncode == 0, result.stderr
    table = (outputs / "comparison.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert {"bare", "cgan", "vae"} <= set(lines)
    assert "GAN-MNIST-conditional" in lines["cgan"] and "generator" in lines["cgan"] and "%" in lines["cgan"]
    assert "VAE-MNIST" in lines["vae"] and "vae " in lines["vae"]
    assert [cell.strip() for cell in lines["bare"].split("|")[1:-1]].count("") >= 12  # listed, with blanks
    assert "Too few epochs" in table
    with Image.open(outputs / "comparison.png") as im:
        assert im.size[0] >= 3 * 300
    assert f"compare: page -> {outputs / 'index.html'}" in result.stdout
    index = (outputs / "index.html").read_text()
    assert all(f'href="{name}/"' in index for name in ("bare", "cgan", "vae"))
    assert "cgan/samples/epoch_001.png" in index and "no sample grids yet" in index  # bare: listed, with notes


def test_compare_without_runs(tmp_path):
    result = run_script("compare.py", str(tmp_path))
    assert result.returncode == 0 and "no runs" in result.stdout and not (tmp_path / "comparison.md").exists()
    assert "No runs here yet" in (tmp_path / "index.html").read_text()
    result = run_script("compare.py", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr.startswith("error:")


def test_compare_chosen_runs(tmp_path, capsys):
    for name in ("a/gan", "a/vae", "b/dcgan", "a/nothing"):
        (tmp_path / name).mkdir(parents=True)
        if name != "a/nothing":
            (tmp_path / name / "config.json").write_text(json.dumps({"script": f"{name[2:].upper()}-MNIST.py"}))
    assert compare.main([str(tmp_path / "a" / "gan")]) == 0  # one run: the page goes beside it
    assert "a/index.html" in capsys.readouterr().out and "vae" not in (tmp_path / "a" / "index.html").read_text()
    assert compare.main([str(tmp_path / "a")]) == 0  # a folder of runs: all of them
    assert 'href="vae/"' in (tmp_path / "a" / "index.html").read_text()
    assert compare.main([str(tmp_path / "a" / "vae"), str(tmp_path / "b" / "dcgan")]) == 0  # into the common parent
    index = (tmp_path / "index.html").read_text()
    assert 'href="a/vae/"' in index and 'href="b/dcgan/"' in index and "a/gan" not in index
    assert "| vae |" in (tmp_path / "comparison.md").read_text()
    with pytest.raises(SystemExit) as stop:
        compare.main([str(tmp_path / "a" / "gan"), str(tmp_path / "a" / "nothing")])
    assert stop.value.code == 2 and "is not a run" in capsys.readouterr().err


def test_eval_every_zero_writes_no_metrics(tmp_path, runs):
    _, data_dir = runs
    out = tmp_path / "gan"
    result = run_script("GAN-MNIST.py", f"--data_dir={data_dir}", f"--out_dir={out}", *TINY[:2], "--eval_every=0")
    assert result.returncode == 0, result.stderr
    assert not (out / "metrics.csv").exists() and "metrics" not in result.stdout


def test_stability_notes_read_the_trends(tmp_path):
    losses = [
        {
            "epoch": e,
            "loss_d": 1.0 - 0.15 * e,
            "loss_g": 1.0 + 0.5 * e,
            "d_real": 0.6 + 0.07 * e,
            "d_fake": 0.5 - 0.08 * e,
        }
        for e in range(1, 6)
    ]
    scores = [{"epoch": e, "classes_covered": c, "fid": f} for e, c, f in ((1, 10, 50.0), (3, 10, 30.0), (5, 6, 80.0))]
    note = compare.stability({"losses": losses, "metrics": scores})
    for phrase in (
        "D(x) drifts towards 1",
        "D(G(z)) falls towards 0",
        "coverage dropped from 10",
        "FID is worse",
        "swings",
    ):
        assert phrase in note
    steady = [{"epoch": e, "loss_d": 1.2, "loss_g": 0.9, "d_real": 0.6, "d_fake": 0.4} for e in range(1, 6)]
    assert compare.stability({"losses": steady, "metrics": []}).startswith("No sign of instability")


def test_compare_help_lists_usage():
    result = run_script("compare.py", "--help")
    assert result.returncode == 0 and "OUTPUTS_DIR" in result.stdout and (ROOT / "compare.py").exists()
