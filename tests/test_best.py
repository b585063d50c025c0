"""checkpoints/best.pt: follows the lowest FID, survives a resume and a failed write; generate.py samples it."""

import csv

import pytest
import torch
from conftest import generate, load_script

from common import checkpoint, evaluation, exits, files, records
from common.run_folders import best_of

TINY = [
    "--eval_every=1",
    "--dataset=fake",
    "--ngf=4",
    "--ndf=4",
    "--batch_size=256",
    "--eval_samples=16",
    "--device=cpu",
]


class Stub:
    """Stands for the evaluator: the FID of each epoch is chosen by the test."""

    classes = tuple(str(k) for k in range(10))


@pytest.fixture
def scripted_fid(monkeypatch):
    """FID by epoch (the test fills it in); records.record returns it, and best.pt's writes are counted."""
    fids: dict[int, float] = {}
    written: list[int] = []

    def record(out, history, epoch, evaluator, fake, *args, **kwargs):
        row = {"epoch": epoch, "n": len(fake), "fid": fids[epoch]}
        history[:] = [r for r in history if r["epoch"] != epoch] + [row]
        return row

    real_save_best = checkpoint.save_best

    def save_best(state, scores, folder):
        written.append(state["epoch"])
        return real_save_best(state, scores, folder)

    monkeypatch.setattr(evaluation.Evaluator, "for_dataset", classmethod(lambda cls, *a, **k: Stub()))
    monkeypatch.setattr(records, "record", record)
    monkeypatch.setattr(checkpoint, "save_best", save_best)
    return fids, written


def train(monkeypatch, out, *args: str) -> None:
    """DCGAN-MNIST.py's main() in this process, into `out`."""
    monkeypatch.setattr("sys.argv", ["DCGAN-MNIST.py", *TINY, *args, f"--out_dir={out}"])
    load_script("DCGAN-MNIST.py").main()


def best_column(out) -> dict[int, int]:
    with open(out / "metrics.csv") as f:
        return {int(r["epoch"]): int(r["best"]) for r in csv.DictReader(f)}


def test_best_follows_the_lowest_fid_and_survives_a_resume(tmp_path, monkeypatch, capsys, scripted_fid):
    fids, written = scripted_fid
    fids.update({1: 50.0, 2: 30.0, 3: 40.0})  # down, then up
    train(monkeypatch, tmp_path, "--epochs=3")
    folder = tmp_path / "checkpoints"
    best = checkpoint.read(folder / "best.pt")
    assert best["epoch"] == 2 and best["scores"]["fid"] == 30.0 and written == [1, 2]
    assert not {"optimizers", "rng"} & set(best)  # only what sampling needs
    second = checkpoint.read(folder / "previous.pt")  # last.pt of epoch 2: the same weights
    for name, tensor in second["models"]["generator"].items():
        assert torch.equal(best["models"]["generator"][name], tensor), name
    assert best_column(tmp_path) == {1: 0, 2: 1, 3: 0}
    assert "best: epoch 2, FID 30 (last: 40)" in capsys.readouterr().out

    fids.update({4: 35.0, 5: 20.0})  # worse than the best of before the resume, then better
    train(monkeypatch, tmp_path, "--epochs=5")
    assert checkpoint.read(folder / "best.pt")["epoch"] == 5 and written == [1, 2, 5]  # never a worse one
    assert best_column(tmp_path) == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1}
    assert "best: epoch 5, FID 20 (last: 20)" in capsys.readouterr().out
    compare = load_script("compare.py")
    assert compare.summarize(tmp_path)["best"] == "epoch 5, FID 20 (last: 20)"
    assert "best: epoch 5, FID 20 (last: 20)" in (tmp_path.parent / "index.html").read_text()  # the page


def test_best_of_reads_the_marked_row_else_the_lowest_fid():
    marked = [
        {"epoch": 1.0, "fid": 9.0, "best": 0.0},
        {"epoch": 2.0, "fid": 5.0, "best": 1.0},
        {"epoch": 3.0, "fid": 7.0},
    ]
    assert best_of(marked) == "epoch 2, FID 5 (last: 7)"
    old = [{"epoch": 1.0, "fid": 9.0}, {"epoch": 2.0, "fid": 4.0}, {"epoch": 3.0, "fid": 6.0}]  # before best.pt
    assert best_of(old) == "epoch 2, FID 4 (last: 6)" and best_of([{"epoch": 1.0}]) == ""


def test_a_failed_write_of_best_pt_exits_4_and_the_resume_writes_it(tmp_path, monkeypatch, capsys, scripted_fid):
    fids, _ = scripted_fid
    fids.update({1: 50.0, 2: 30.0})
    real_write = files.write_safely

    def full_for_best(path, *args, **kwargs):
        if path.name == "best.pt" and "best" in str(args[-1] if args else ""):
            raise files.WriteFailed(f"could not write the best checkpoint to {path}: No space left on device")
        return real_write(path, *args, **kwargs)

    train(monkeypatch, tmp_path, "--epochs=1")
    monkeypatch.setattr(files, "write_safely", full_for_best)
    with pytest.raises(SystemExit) as stop:
        train(monkeypatch, tmp_path, "--epochs=2")
    assert stop.value.code == exits.WRITE_FAILED
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # the rest: progress bars
    assert len(error) == 1 and "best checkpoint" in error[0] and "resumes after epoch 2" in error[0]
    assert checkpoint.read(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1  # the older best, whole
    monkeypatch.setattr(files, "write_safely", real_write)
    train(monkeypatch, tmp_path, "--epochs=2")  # nothing left to train: the resume repairs best.pt
    assert checkpoint.read(tmp_path / "checkpoints" / "best.pt")["epoch"] == 2


def test_generate_samples_best_by_default_and_names_the_epoch(tmp_path, monkeypatch, capsys, scripted_fid):
    fids, _ = scripted_fid
    fids.update({1: 30.0, 2: 40.0})
    train(monkeypatch, tmp_path, "--epochs=2")
    capsys.readouterr()
    assert generate(tmp_path, "--n=4") == 0
    assert "after epoch 1, best.pt (lowest FID 30)" in capsys.readouterr().out
    assert generate(tmp_path, "--n=4", "--checkpoint=last") == 0
    assert "after epoch 2, last.pt" in capsys.readouterr().out
    assert generate(tmp_path, "--n=4", f"--checkpoint={tmp_path / 'checkpoints' / 'previous.pt'}") == 0
    assert "after epoch 1, " in capsys.readouterr().out


def test_without_evaluation_there_is_no_best_and_the_run_says_so(tmp_path, monkeypatch, capsys):
    train(monkeypatch, tmp_path, "--epochs=1", "--eval_every=0")
    out = capsys.readouterr().out
    assert out.count("best: none, evaluation is off (EVAL_EVERY=0)") == 1
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
    assert generate(tmp_path, "--n=4") == 0  # falls back to last.pt
    assert "after epoch 1, last.pt" in capsys.readouterr().out
    assert generate(tmp_path, "--n=4", "--checkpoint=best") == 2
    assert "use --checkpoint last" in capsys.readouterr().err


def test_an_old_run_resumes_with_its_class_count_renamed(tmp_path, monkeypatch, scripted_fid):
    """Checkpoints from before precision/recall/density/coverage called the classes covered `coverage`."""
    fids, _ = scripted_fid
    fids.update({1: 50.0, 2: 40.0})
    train(monkeypatch, tmp_path, "--epochs=1")
    last = tmp_path / "checkpoints" / "last.pt"
    state = checkpoint.read(last)
    state["metrics"][0]["coverage"] = 7  # as an old run wrote it
    torch.save(state, last)
    train(monkeypatch, tmp_path, "--epochs=2")
    with open(tmp_path / "metrics.csv") as f:
        first = next(csv.DictReader(f))
    assert first["classes_covered"] == "7" and not first.get("coverage")
