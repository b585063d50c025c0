"""The training-run helper and the steps it drives: no host sync in a step, D frozen for G's step,
batches of one size, the data indexed where it lives, and what a run writes about its own time."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import load_script, run_script, test_device

from common import data, gan
from common.batches import Batches
from common.tally import Tally, first_bad

META = torch.device("meta")  # off the host like a GPU: .item() and any host tensor mixed in raise
GANS = {  # name: (script, config, conditional); a D with a class head returns class logits too
    "DCGAN-MNIST.py": ("DCGAN-MNIST.py", {"LATENT_DIM": 8, "NGF": 4, "NDF": 4}, False),
    "CDCGAN-MNIST.py": ("CDCGAN-MNIST.py", {"LATENT_DIM": 8, "NGF": 4, "NDF": 4, "D_LABELS": "planes"}, True),
    "CDCGAN-MNIST.py classifier": (
        "CDCGAN-MNIST.py",
        {"LATENT_DIM": 8, "NGF": 4, "NDF": 4, "D_LABELS": "classifier"},
        True,
    ),
    "GAN-MNIST.py": ("GAN-MNIST.py", {"LATENT_DIM": 8, "HIDDEN": 16, "CONDITIONAL": True}, True),
    "GAN-MNIST.py projection+classifier": (
        "GAN-MNIST.py",
        {"LATENT_DIM": 8, "HIDDEN": 16, "CONDITIONAL": True, "D_LABELS": "projection+classifier"},
        True,
    ),
    "DCGAN-CelebA.py": ("DCGAN-CelebA.py", {"LATENT_DIM": 8, "NGF": 4, "NDF": 4, "IMAGE_SIZE": 16}, False),
}


def gan_on(device: torch.device, name: str):
    """A script's module, its generator, discriminator, their Adam optimizers and a real batch, on `device`."""
    script, cfg, conditional = GANS[name]
    module = load_script(script)
    side = cfg.get("IMAGE_SIZE", 28)
    with device:
        models = module.build_models(cfg, (3 if side == 16 else 1, side, side), 10)
        g, d = models["generator"], models["discriminator"]
        opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
        real = torch.rand(4, 3 if side == 16 else 1, side, side) * 2 - 1
        labels = torch.arange(4)
    return module, g, d, opt_g, opt_d, real, labels if conditional else None


def gan_steps(module, g, d, opt_g, opt_d, real, labels, device):
    """One d_step and one g_step; their returned tensors."""
    out = gan.d_step(g, d, opt_d, real, labels, 0.9)
    return (*out.values(), gan.g_step(g, d, opt_g, len(real), 0 if labels is None else g.n_classes))


@pytest.mark.parametrize("script", sorted(GANS))
def test_gan_steps_make_no_host_sync(script):
    """On the meta device a .item() or a host tensor mixed into the step raises; every result stays there."""
    module, g, d, opt_g, opt_d, real, labels = gan_on(META, script)
    results = gan_steps(module, g, d, opt_g, opt_d, real, labels, META)
    assert len(results) == 4 and all(t.device == META and t.dim() == 0 for t in results)


def test_vae_step_makes_no_host_sync():
    module = load_script("VAE-MNIST.py")
    with META:
        vae = module.build_models({"LATENT_DIM": 2, "HIDDEN": 16, "CHANNELS": 4})["vae"]
        opt = torch.optim.Adam(vae.parameters())
        out = module.train_step({"BETA": 1.0}, {"vae": vae}, {"opt": opt}, torch.rand(4, 1, 28, 28), torch.arange(4))
    assert list(out) == ["train_neg_elbo"] and out["train_neg_elbo"].device == META and out["train_neg_elbo"].dim() == 0


def test_run_log_sums_on_the_device_without_reading():
    """log() only adds device tensors (it works on meta, where any read raises); reading is means()."""
    tally = Tally(META)
    for _ in range(3):
        tally.add(loss_d=torch.ones((), device=META), d_real=torch.zeros((), device=META))
    assert tally.counts == {"loss_d": 3, "d_real": 3} and tally.sums["loss_d"].device == META
    with pytest.raises((RuntimeError, NotImplementedError)):
        tally.means()  # the one place that reads, at the progress bar's cadence and the epoch's end


def test_tally_resumes_from_its_exact_totals():
    tally = Tally(torch.device("cpu"))
    for value in (0.1, 0.2, 0.3):
        tally.add(loss=torch.tensor(value))
    again = Tally(torch.device("cpu"), tally.totals(), tally.counts)  # what a Ctrl-C checkpoint holds
    for t in (tally, again):
        t.add(loss=torch.tensor(0.7))
    assert again.totals() == tally.totals() and again.means()["loss"] == pytest.approx(1.3 / 4)
    assert first_bad({"a": 1.0, "b": float("nan")})[0] == "b" and first_bad({"a": 1.0}) is None


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_an_epochs_clock_waits_for_the_devices_queue(kind, monkeypatch):
    """On a GPU or a Mac the steps are queued: the epoch's seconds are read after its queue has run, or its last
    steps would count as the extras that follow (and the cadence would think them dear)."""
    from common.tally import Epoch

    waited = []
    if kind == "cuda":
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    else:
        monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append(kind))
    Epoch(1, torch.device(kind)).elapsed()
    assert waited == [torch.device(kind) if kind == "cuda" else kind]


@pytest.mark.skipif(test_device() != "cuda", reason="needs pytest --device=cuda")
@pytest.mark.parametrize("script", sorted(GANS))
def test_gan_steps_make_no_host_sync_on_cuda(script):
    cuda = torch.device("cuda")
    module, g, d, opt_g, opt_d, real, labels = gan_on(cuda, script)
    gan_steps(module, g, d, opt_g, opt_d, real, labels, cuda)  # warm-up: lazy CUDA init may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gan_steps(module, g, d, opt_g, opt_d, real, labels, cuda)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("script", sorted(GANS))
def test_g_step_computes_no_gradient_for_d(script):
    module, g, d, opt_g, opt_d, real, labels = gan_on(torch.device("cpu"), script)
    gan.d_step(g, d, opt_d, real, labels)
    after_d = [p.grad.clone() for p in d.parameters()]
    weights_g = [p.detach().clone() for p in g.parameters()]
    gan.g_step(g, d, opt_g, len(real), 0 if labels is None else g.n_classes)
    assert all(torch.equal(a, p.grad) for a, p in zip(after_d, d.parameters(), strict=True))  # nothing added
    assert all(p.requires_grad for p in d.parameters())  # D trains again in its next step
    assert any(not torch.equal(a, p) for a, p in zip(weights_g, g.parameters(), strict=True))  # G did learn


def test_a_class_head_learns_the_real_classes_in_d_step_and_teaches_g_in_g_step():
    """The auxiliary classifier (D_LABELS with "classifier"): D's step trains its class head on the
    real images' labels, and G's step gets a gradient from it alone when the real/fake head is blind."""
    module, g, d, opt_g, opt_d, real, labels = gan_on(torch.device("cpu"), "CDCGAN-MNIST.py classifier")
    labels = torch.tensor([3, 7, 3, 7])
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(30):
        gan.d_step(g, d, opt_d, real, labels)
    with torch.no_grad():
        logits, classes = d(real, labels)
        assert classes.argmax(1).tolist() == [3, 7, 3, 7]  # named from the image, not read off the label
        assert torch.equal(d(real, torch.zeros(4, dtype=torch.long))[1], classes)
        final = d.net[-1]
        final.weight.zero_(), final.bias.zero_()  # the real/fake verdict no longer depends on G's images
    weights_g = [p.detach().clone() for p in g.parameters()]
    gan.g_step(g, d, opt_g, 4, 10)
    assert any(not torch.equal(a, p) for a, p in zip(weights_g, g.parameters(), strict=True))  # the class loss moved G
    assert gan.class_loss(None, labels) == 0.0


def test_frozen_restores_only_what_it_froze():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)  # frozen by the user: stays frozen
    with gan.frozen(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]


def test_gan_losses_have_exact_fp32_targets():
    logits = torch.full((3,), 2.0, dtype=torch.bfloat16)  # bf16 logits, as under autocast
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(torch.full((3,), 2.0), torch.full((3,), 0.9)) + bce(torch.full((3,), 2.0), torch.zeros(3))
    assert gan.d_loss(logits, logits, 0.9).item() == pytest.approx(expected.item(), rel=1e-6)  # 0.9, not 0.8984
    assert gan.g_loss(logits).dtype == torch.float32


def test_batches_on_the_device_are_indexed_there():
    split = data.Split(torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1), torch.arange(40)).to(META)
    batches = Batches(split, 8, seed=0)
    got = list(batches.epoch(1, META))
    assert len(got) == 5 and all(x.device == META and x.shape == (8, 1, 1, 1) for x, _ in got)


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("timed") / "run"
    args = ["--dataset=mnist-sample", "--latent_dim=2", "--batch_size=300", "--epochs=2", "--eval_every=0"]
    result = run_script("VAE-MNIST.py", *args, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out, result


def test_losses_csv_has_the_epoch_as_the_user_waits_for_it(timed_run):
    out, result = timed_run
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        assert 0 < float(row["time_s"]) <= float(row["wall_s"])  # the steps, then everything else as well
        assert float(row["img_per_s"]) == pytest.approx(13 * 300 / float(row["time_s"]), rel=1e-3)  # 13 whole batches
    assert "s of steps" in result.stdout and "s in all" in result.stdout


def test_the_gif_and_figures_are_built_at_the_end(timed_run):
    out, _ = timed_run
    assert (out / "progress.gif").stat().st_size > 1000 and (out / "loss.png").exists()
    assert (out / "latent.png").exists() and (out / "manifold.png").exists()


def _weights(out, name):
    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)["models"][name]


def test_generator_ema_is_saved_resumes_exactly_and_draws_the_samples(tmp_path):
    tiny = ["--dataset=mnist-sample", "--ngf=4", "--ndf=4", "--batch_size=500", "--eval_every=0", "--ema=0.9"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_script("DCGAN-MNIST.py", *tiny, "--epochs=2", f"--out_dir={whole}").returncode == 0
    assert run_script("DCGAN-MNIST.py", *tiny, "--epochs=1", f"--out_dir={split}").returncode == 0
    assert run_script("DCGAN-MNIST.py", *tiny, "--epochs=2", f"--out_dir={split}").returncode == 0
    ema, trained = _weights(whole, "generator_ema"), _weights(whole, "generator")
    assert any(not torch.equal(ema[k], trained[k]) for k in ema)  # a moving average, not a copy
    resumed = _weights(split, "generator_ema")
    assert all(torch.allclose(ema[k].float(), resumed[k].float(), atol=1e-6) for k in ema)  # its warm-up resumes too


def test_a_run_without_ema_resumes_with_one(tmp_path):
    tiny = ["--dataset=mnist-sample", "--ngf=4", "--ndf=4", "--batch_size=500", "--eval_every=0"]
    out = tmp_path / "run"
    assert run_script("DCGAN-MNIST.py", *tiny, "--epochs=1", "--ema=0", f"--out_dir={out}").returncode == 0
    result = run_script("DCGAN-MNIST.py", *tiny, "--epochs=2", "--ema=0.9", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "has no generator_ema; it starts from generator's weights" in result.stdout
    assert "generator_ema" in torch.load(out / "checkpoints" / "last.pt", weights_only=False)["models"]


def test_done_is_the_last_line_after_the_scripts_own_last_pictures(timed_run):
    """Leaving the run's block ends the run: "Done:" comes after the script's last pictures (the VAE's latent.png),
    and outputs/index.html is written after progress.gif, so the page shows the run's final pictures."""
    out, result = timed_run
    lines = [x for x in result.stdout.splitlines() if x.strip()]
    assert lines[-1] == f"Done: {out}/" and lines[-2].startswith("best: "), lines[-3:]
    page = out.parent / "index.html"
    for picture in ("latent.png", "manifold.png", "progress.gif"):
        assert (out / picture).stat().st_mtime_ns <= page.stat().st_mtime_ns, picture
    assert "progress.gif" in page.read_text() and "no progress.gif" not in page.read_text()


@pytest.mark.parametrize("script", ["VAE-MNIST.py", "DCGAN-MNIST.py"])
def test_whether_an_epoch_draws_its_grids_never_changes_what_the_run_trains(tmp_path, monkeypatch, script):
    """The VAE's reconstructions sample z: drawn on their own random numbers, the grids the cadence skips (by the
    clock) leave training as it was, so the same seed trains the same run on any machine."""
    from common.cadence import Cadence

    tiny = {"VAE-MNIST.py": ["--hidden=16", "--channels=4"], "DCGAN-MNIST.py": ["--ngf=4", "--ndf=4"]}[script]
    losses = {}
    for every in (True, False):
        monkeypatch.setattr(Cadence, "grid", lambda self, epoch, every=every: every or epoch == self.epochs)
        out = tmp_path / str(every)
        argv = [*tiny, "--dataset=mnist-sample", "--batch_size=500", "--epochs=3", "--eval_every=0", "--device=cpu"]
        monkeypatch.setattr("sys.argv", [script, *argv, f"--out_dir={out}"])
        load_script(script).main()
        assert (out / "samples" / "epoch_002.png").exists() == every
        with open(out / "losses.csv") as f:
            losses[every] = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in csv.DictReader(f)]
    assert losses[True] == losses[False] and len(losses[True]) == 3
    evaluating = json.loads((out / "time.json").read_text())["evaluation"]  # no evaluator: --eval_every=0
    assert (evaluating > 0) == (script == "VAE-MNIST.py")  # the VAE's class fit counts as evaluation


def test_the_run_leaves_the_scripts_globals_as_the_command_line_set_them(tmp_path, monkeypatch):
    """The sample budget and the offline fall back are the run's settings (r.cfg), not rewritten globals."""
    from common import config, run

    module = load_script("DCGAN-MNIST.py")
    ns = vars(module)
    argv = ["--dataset=mnist", f"--data_dir={tmp_path / 'none'}", "--download=False", "--device=cpu"]
    monkeypatch.setattr("sys.argv", ["DCGAN-MNIST.py", *argv, f"--out_dir={tmp_path / 'run'}", "--eval_every=0"])
    config.setup(ns)
    with run.Run(ns, module.SHAPE_KEYS) as r:
        r.load(lambda device: data.load(ns["DATASET"], ns["DATA_DIR"], ns["DOWNLOAD"], device))
        assert r.cfg["DATASET"] == "mnist-sample" and r.cfg["EPOCHS"] == ns["SAMPLE_EPOCHS"] != ns["EPOCHS"]
    assert ns["DATASET"] == "mnist" and ns["EPOCHS"] == 10  # as the constants block and the command line say


def test_the_cadence_names_every_how_often_rule():
    from common.cadence import LOG_SECONDS, SAVE_SECONDS, SHARES, SYNC_STEPS, Cadence

    now = [100.0]
    cadence = Cadence(epochs=5, eval_every=2, together=False, clock=lambda: now[0])
    assert [e for e in range(1, 6) if cadence.evaluate(e)] == [2, 4, 5]  # every EVAL_EVERY, and the last
    assert cadence.last(5) and not cadence.last(4)
    cadence.was_read()
    assert not cadence.read(1, signalled=False) and cadence.read(1, signalled=True)  # a signal: at once
    now[0] += LOG_SECONDS
    assert cadence.read(2, signalled=False)
    assert cadence.save(1) and cadence.draw(1)  # this start's first checkpoint; nothing measured yet
    with cadence.timed("writing", "draw"):
        now[0] += 10.0  # a drawing far over the budget of a run 10.5 s old
    cadence.was_saved()
    assert not cadence.draw(2) and cadence.draw(5)  # the last epoch always draws
    now[0] += 2 * 10.0 / SHARES["writing"]  # the run has gone on long enough to afford it again
    assert cadence.draw(3)
    now[0] += SAVE_SECONDS
    with cadence.timed("writing", "save"):
        now[0] += 1e6  # however costly, a checkpoint every SAVE_SECONDS
    now[0] += SAVE_SECONDS
    assert cadence.save(4)
    together = Cadence(epochs=5, eval_every=0, together=True)
    assert [s for s in range(1, 3 * SYNC_STEPS + 1) if together.read(s, False)] == [SYNC_STEPS, 2 * SYNC_STEPS, 75]
    assert not any(together.evaluate(e) for e in range(1, 5)) and together.evaluate(5)


def simulate(
    step_s: float,
    epochs: int,
    eval_s: float,
    save_s: float,
    draw_s: float,
    start_s: float = 5.0,
    grid_s: float = 0.05,
    own_s: float = 0.0,
):
    """A run on a stubbed clock, with run.py's order: steps, the script's own evaluation work (own_s, in
    r.evaluating(): the VAE's class fit, at the first epoch and each evaluation), grids, evaluation, the
    checkpoint, the figures. Returns (the cadence's summary, the epochs evaluated, the epochs saved, the epochs
    whose grids were drawn)."""
    from common.cadence import Cadence

    now = [0.0]
    cadence = Cadence(epochs, "auto", together=False, clock=lambda: now[0], since=0.0)
    now[0] += start_s
    cadence.stepping()
    evaluated, saved, gridded = [], [], []
    for epoch in range(1, epochs + 1):
        now[0] += step_s
        cadence.add("steps", step_s)
        if own_s and (epoch == 1 or cadence.evaluate(epoch)):
            with cadence.timed("evaluation", "evaluating"):
                now[0] += own_s
        if cadence.grid(epoch):
            with cadence.timed("grids", "grid"):
                now[0] += grid_s
            gridded.append(epoch)
        if cadence.evaluate(epoch):
            with cadence.timed("evaluation", "evaluate"):
                now[0] += eval_s
            evaluated.append(epoch)
        if cadence.save(epoch):
            with cadence.timed("writing", "save"):
                now[0] += save_s
            cadence.was_saved()
            saved.append(epoch)
            if cadence.draw(epoch):
                with cadence.timed("writing", "draw"):
                    now[0] += draw_s
    return cadence.summary(), evaluated, saved, gridded


@pytest.mark.parametrize(
    ("step_s", "epochs", "eval_s"),
    [
        (5.5, 60, 2.5),  # the DCGAN's first run on the sample, on 2 CPU cores
        (1.0, 20, 3.0),  # short epochs, a costly evaluation (the VAE's on the sample)
        (0.01, 2000, 1.0),  # a fast device: 10 ms of steps an epoch (a GPU)
        (0.31, 60, 1.0),  # a fast device's first run on the sample: 31 steps of 10 ms an epoch
        (100.0, 10, 3.0),  # long epochs (full MNIST on a CPU): every epoch evaluates and saves
        (1.2, 100, 1.5),  # GAN-MNIST's first run on the sample
    ],
)
def test_the_auto_cadence_keeps_the_extras_within_a_tenth_of_the_wall_time(step_s, epochs, eval_s):
    from common.cadence import EXTRAS_SHARE, SAVE_SECONDS, SHARES

    times, evaluated, saved, gridded = simulate(step_s, epochs, eval_s, save_s=0.2, draw_s=0.7, grid_s=0.05)
    extras = times["evaluation"] + times["writing"]
    once = eval_s + 0.2 + 0.7 + 0.05  # the first epoch measures each extra, the last runs them whatever the budget
    assert extras <= EXTRAS_SHARE * times["wall"] + 2 * once, times
    assert len(evaluated) >= min(epochs, int(SHARES["evaluation"] * times["wall"] / eval_s))  # the budget is used
    assert evaluated[-1] == epochs and saved[-1] == epochs and saved[0] == 1  # the last always; the first start's
    assert gridded[0] == 1 and gridded[-1] == epochs  # progress.gif's frames: from the first epoch to the last,
    affordable = SHARES["grids"] * times["wall"] / 0.05  # as many as the budget allows, spaced in whole epochs:
    assert len(gridded) >= min(epochs, affordable / 2), gridded  # at least half
    gaps = [b - a for a, b in zip(saved, saved[1:], strict=False)]
    assert max(gaps, default=0) * step_s <= SAVE_SECONDS + step_s + eval_s  # what a kill -9 can lose
    if step_s * EXTRAS_SHARE > eval_s + 1:  # long epochs: the budget has room for every extra, every epoch
        assert evaluated == saved == list(range(1, epochs + 1))
    elif len(evaluated) >= 3:  # the FID curve keeps points all along the run, not only at its end
        assert evaluated[len(evaluated) // 2] < 0.75 * epochs, evaluated
        gaps = [b - a for a, b in zip(evaluated, evaluated[1:-1], strict=False)]  # the last is forced
        assert max(gaps) - min(gaps) <= 2, evaluated  # evenly spaced, not bunched after a costly one
    if eval_s > SHARES["evaluation"] * (step_s + 0.2) * epochs:  # one evaluation is over the whole run's share
        assert evaluated == [epochs]  # so only the last epoch evaluates (the VAE on the sample)


def test_the_scripts_own_evaluation_work_is_weighed_with_each_evaluation():
    """The VAE's class fit (r.evaluating(): an encoder pass over full MNIST, 3.5 s) comes with each evaluation
    (2.5 s): the cadence weighs both, so 20 epochs of 15.4 s keep their evaluations within their share (counting
    only evaluate()'s own cost, they took 6.2%), and still score one epoch before the last."""
    from common.cadence import SHARES

    times, evaluated, _, _ = simulate(15.4, 20, 2.5, save_s=0.2, draw_s=0.7, own_s=3.5)
    assert times["evaluation"] <= SHARES["evaluation"] * times["wall"], times
    assert len(evaluated) >= 2 and evaluated[-1] == 20


def test_a_timed_block_inside_another_counts_its_seconds_once():
    """The epoch's writes time the figures inside them: each second is counted once, by the innermost block."""
    from common.cadence import Cadence

    now = [0.0]
    cadence = Cadence(5, "auto", together=False, clock=lambda: now[0])
    with cadence.timed("writing", "save"):
        now[0] += 1.0  # the checkpoint
        with cadence.timed("writing", "draw"):
            now[0] += 3.0  # the figures
        now[0] += 0.5  # the tables
    with cadence.timed("evaluation", "evaluate"):
        now[0] += 2.0
    assert cadence.spent == {"writing": 4.5, "evaluation": 2.0} and sum(cadence.spent.values()) == now[0]
    assert cadence.cost["save"] == 1.5 and cadence.cost["draw"] == 3.0 and cadence.cost["evaluate"] == 2.0


def test_eval_every_as_a_number_keeps_its_meaning():
    from common.cadence import Cadence

    cadence = Cadence(10, 3, together=False)
    assert [e for e in range(1, 11) if cadence.evaluate(e)] == [3, 6, 9, 10]
    assert [e for e in range(1, 11) if Cadence(10, 0, together=False).evaluate(e)] == [10]  # the run skips it


def test_the_run_says_where_its_time_went(timed_run):
    import json

    out, result = timed_run
    times = json.loads((out / "time.json").read_text())
    assert set(times) == {"wall", "start-up", "steps", "evaluation", "writing", "other"}
    assert 0 < times["steps"] < times["wall"] and times["start-up"] > 0
    assert sum(v for k, v in times.items() if k != "wall") == pytest.approx(times["wall"], abs=0.05)
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("time: ")]
    assert "in all: start-up" in line and "steps" in line and "%" in line, line
