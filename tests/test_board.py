"""TENSORBOARD=True: losses by step, metrics and grids by epoch, read back from the event files; resume; no package."""

import sys

import pytest
from conftest import load_script

TINY = [
    "--eval_every=1",
    "--dataset=mnist-sample",
    "--ngf=4",
    "--ndf=4",
    "--batch_size=1000",
    "--eval_samples=200",
    "--device=cpu",
]


def train(monkeypatch, out, *args: str) -> None:
    """DCGAN-MNIST.py's main() in this process, with TensorBoard on."""
    argv = ["DCGAN-MNIST.py", *TINY, "--tensorboard=True", *args, f"--out_dir={out}", f"--data_dir={out.parent}"]
    monkeypatch.setattr("sys.argv", argv)
    load_script("DCGAN-MNIST.py").main()


def events(folder):
    """The event files of one writer's folder, as TensorBoard reads them (purged steps hidden)."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install -r requirements-dev.txt)",
    ).EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_losses_by_step_metrics_and_grids_by_epoch_and_a_resume_logs_nothing_twice(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -r requirements-dev.txt)")
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "run"
    train(monkeypatch, out, "--epochs=2")
    steps, epochs = events(out / "tensorboard" / "steps"), events(out / "tensorboard" / "epochs")
    assert {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake"} <= set(steps.Tags()["scalars"])
    assert [e.step for e in steps.Scalars("train/loss_g")][-1] == 8  # 4 steps an epoch; the epoch's end
    assert [e.step for e in epochs.Scalars("metrics/fid")] == [1, 2]
    assert [e.step for e in epochs.Scalars("metrics/recall")] == [1, 2]
    assert [e.step for e in epochs.Scalars("epoch/loss_g")] == [1, 2]
    assert [e.step for e in epochs.Images("samples")] == [1, 2]

    # what a run that died before its epoch-3 checkpoint would have logged: hidden on resume, logged again
    for name, step in (("steps", 12), ("epochs", 3)):
        with SummaryWriter(out / "tensorboard" / name) as stale:
            stale.add_scalar("train/loss_g" if name == "steps" else "epoch/loss_g", 999.0, step)
    train(monkeypatch, out, "--epochs=3")
    steps, epochs = events(out / "tensorboard" / "steps"), events(out / "tensorboard" / "epochs")
    logged = [(e.step, e.value) for e in epochs.Scalars("epoch/loss_g")]
    assert [s for s, _ in logged] == [1, 2, 3] and logged[-1][1] != 999.0
    by_step = [e.step for e in steps.Scalars("train/loss_g")]
    assert (
        by_step == sorted(set(by_step))
        and by_step[-1] == 12
        and 999.0 not in [e.value for e in steps.Scalars("train/loss_g")]
    )


def test_without_the_package_one_line_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard raises ImportError
    with pytest.raises(SystemExit) as stop:
        train(monkeypatch, tmp_path / "run", "--epochs=1")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0]
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained
