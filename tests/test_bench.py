"""The speed bench (python bench.py): its side-by-side table (auto against fp32), its markdown file and its
errors; no timing is asserted."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFLINE_ENV, ROOT, device_args, test_device
from torch import nn

import bench
from common import speed as speed_module

COLUMNS = [
    "model",
    "script",
    "batch",
    "steps",
    "setting",
    "img/s",
    "fp32 img/s",
    "speed-up",
    "s/epoch",
    "s/epoch sample",
    "GFLOP/img",
    "FLOP share",
    "DataLoader img/s",
    "repo / DataLoader",
    "generation img/s",
    "notes",
]
SWITCH_COLUMNS = [
    "model",
    "switches",
    "batch",
    "steps",
    "train img/s",
    "speed-up",
    "s/epoch",
    "GFLOP/img",
    "FLOP share",
    "generation img/s",
    "speed-up",
]
COL = {name: i for i, name in enumerate(COLUMNS)}


def rows(text: str, columns: list[str] = COLUMNS) -> list[list[str]]:
    """The cells of every markdown table row after the header and the rule."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == columns
    assert set(lines[1].replace("|", "").replace(":", "")) == {"-"}  # the alignment rule
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("x").removesuffix("%"))


def check_row(cells: list[str], model: str, steps: int) -> None:
    """One result row: the right model, positive rates and FLOPs, s/epoch and the ratios from the rates."""
    assert len(cells) == len(COLUMNS)
    assert cells[COL["model"]] == model and cells[COL["script"]] == bench.MODELS[model].script
    assert int(cells[COL["steps"]]) == steps
    repo, fp32, speed_up, loader, ratio, generation, epoch_s, gflop = (
        number(cells[COL[c]])
        for c in (
            "img/s", "fp32 img/s", "speed-up", "DataLoader img/s", "repo / DataLoader", "generation img/s", "s/epoch",
            "GFLOP/img",
        )
    )  # fmt: skip
    assert repo > 0 and fp32 > 0 and loader > 0 and ratio > 0 and generation > 0 and gflop > 0
    # the printed rates are rounded to 0.1 img/s, s/epoch to 0.01 s and the ratios to 0.01
    assert ratio == pytest.approx(repo / loader, rel=0.02, abs=0.01)
    assert speed_up == pytest.approx(repo / fp32, rel=0.02, abs=0.01)
    if cells[COL["setting"]] in ("auto = fp32", "fp32"):  # measured once: the fp32 column is the same run
        assert cells[COL["fp32 img/s"]] == cells[COL["img/s"]] and cells[COL["speed-up"]] == "1.00x"
    images = bench.EPOCH_IMAGES[bench.MODELS[model].dataset]
    assert epoch_s == pytest.approx(images / repo, rel=0.01, abs=0.01)
    if bench.MODELS[model].dataset == "mnist":  # the bundled sample's 4,000 training digits
        assert number(cells[COL["s/epoch sample"]]) == pytest.approx(4_000 / repo, rel=0.01, abs=0.01)
    else:
        assert cells[COL["s/epoch sample"]] == "-"


def test_quick_run_prints_the_table_and_writes_bench_md(tmp_path: Path):
    out = tmp_path / "result" / "bench.md"
    args = [
        "--quick",
        "--models",
        "dcgan,vae",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "16",
        "--gen-batch",
        "64",
    ]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench.py"), *args, *device_args(), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = rows(proc.stdout)
    assert [r[0] for r in printed] == ["dcgan", "vae"]
    for cells in printed:
        assert cells[COL["batch"]] == "16"
        check_row(cells, cells[0], steps=2)
        if test_device() == "cpu":
            assert cells[COL["FLOP share"]] == "n/a"  # no FLOP limit for a CPU unless --peak-tflops gives one
    dcgan, vae = (number(cells[COL["GFLOP/img"]]) for cells in printed)
    assert dcgan > vae  # the conv GAN's two steps against the MLP VAE's one
    text = out.read_text()
    assert rows(text) == printed  # the file holds the very table that was printed
    for fact in (
        f"- device: {test_device()}",
        "- torch ",
        "- batch size: 16",
        "- steps: 2 timed per path: 1 round(s)",
        "load average",
        f"num_workers={bench.parse([]).workers}",
        "FlopCounterMode",
        "- FLOP share: ",
        "- FLOP limit: ",
        "- s/epoch: images per epoch (60,000 MNIST, 202,599 CelebA)",
        "- s/epoch sample: the bundled sample's 4,000 training digits",
        "\n- speed: auto -> ",  # the line the scripts print: what auto chose here, and why
    ):
        assert fact in text
    assert all(cells[COL["setting"]].startswith("auto") for cells in printed)
    if test_device() == "cpu":
        assert "limit: n/a on cpu (give --peak-tflops)" in text
    assert "python bench.py --quick --models dcgan,vae" in text


def test_switches_run_on_the_cpu_and_skip_what_it_cannot(tmp_path: Path, capsys):
    out = tmp_path / "bench.md"
    argv = ["--switches", "amp,cudnn-benchmark,fused_adam", "--models", "gan", "--rounds", "2", *TINY]
    results = bench.main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("note: --switches: cudnn_benchmark skipped on cpu: acts on CUDA only") == 1
    assert [r.switches for r in results] == ["baseline", "amp", "fused_adam", "amp+fused_adam"]  # then all together
    cells = rows(out.read_text(), SWITCH_COLUMNS)
    assert [c[1] for c in cells] == ["baseline", "amp", "fused_adam", "amp+fused_adam"] and cells[0][5] == "1.00x"
    assert all(int(c[3]) == 2 for c in cells)  # two rounds of one step, summed


TINY = ["--device", "cpu", "--steps", "1", "--warmup", "0", "--workers", "0", "--batch-size", "8", "--gen-batch", "64"]


def test_auto_and_fp32_side_by_side_on_a_cpu_with_native_bf16(tmp_path: Path, monkeypatch, capsys):
    """Where auto turns the switches on, each row measures them and plain fp32 eager in one run."""
    monkeypatch.setattr(speed_module, "native_bf16", lambda: "avx512_bf16")
    out = tmp_path / "bench.md"
    gan, dcgan = bench.main(["--models", "gan,dcgan", "--rounds", "1", *TINY, "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "speed: auto -> bf16 autocast + channels_last on cpu (native bf16: avx512_bf16)"
    # per script: GAN-MNIST's own AMP=False (1.07x for its MLPs) and no CHANNELS_LAST leave it in fp32, measured once
    assert (gan.setting, gan.switches, dcgan.setting) == ("fp32", "baseline", "auto: amp+channels_last")
    assert gan.fp32 is None and gan.fp32_rate == gan.repo
    assert dcgan.fp32 > 0 and dcgan.speed_up == pytest.approx(dcgan.repo / dcgan.fp32)
    text = out.read_text()
    for cells, r in zip(rows(text), (gan, dcgan), strict=True):
        check_row(cells, r.model, steps=1)
        assert cells[COL["setting"]] == r.setting
        assert number(cells[COL["fp32 img/s"]]) == pytest.approx(r.fp32_rate, rel=0.01, abs=0.05)
    assert "- speed: auto -> bf16 autocast + channels_last on cpu (native bf16: avx512_bf16)" in text


def test_where_auto_is_fp32_the_row_is_measured_once(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(speed_module, "native_bf16", lambda: "")  # this dev box: AVX-512 without native bf16
    (r,) = bench.main(["--models", "vae", "--rounds", "1", *TINY, "--out", str(tmp_path / "bench.md")])
    assert (r.setting, r.switches, r.fp32) == ("auto = fp32", "baseline", None)  # no second fp32 measurement
    assert r.fp32_rate == r.repo and r.speed_up == 1.0
    # --amp names the switches measured instead of auto: honoured on the CPU, against fp32 beside it
    (r,) = bench.main(["--models", "vae", "--amp", "--rounds", "1", *TINY, "--out", str(tmp_path / "amp.md")])
    assert (r.setting, r.switches) == ("amp", "amp") and r.fp32 > 0
    assert "AMP asked: " in (tmp_path / "amp.md").read_text()


def test_peak_tflops_gives_the_flop_share_a_number(tmp_path: Path):
    out = tmp_path / "bench.md"
    (r,) = bench.main(["--models", "gan", "--rounds", "1", *TINY, "--peak-tflops", "0.5", "--out", str(out)])
    assert r.peak == 0.5 and r.share == pytest.approx(r.repo * r.flops / 0.5e12)
    assert r.epoch_seconds == pytest.approx(60_000 / r.repo)
    (cells,) = rows(out.read_text())
    check_row(cells, "gan", steps=1)
    share = cells[COL["FLOP share"]]
    assert share.endswith("%") and number(share) == pytest.approx(100 * r.share, rel=0.01)
    assert number(cells[COL["GFLOP/img"]]) == pytest.approx(r.flops / 1e9, rel=0.01)
    assert "limit: 0.5 TFLOP/s (--peak-tflops)" in out.read_text()


def step_flops(name: str, batch_size: int, **overrides: object) -> float:
    """FlopCounterMode's count for one training step of a benchmarked model on the CPU (MNIST shapes), with the
    bench's config (the script's defaults) changed by `overrides` (constants by name)."""
    spec = bench.MODELS[name]
    module = bench.config.load_script(spec.script)
    cfg = {**bench.script_config(spec, module, 64), **overrides}
    flops, where = bench.count_flops(module, cfg, (1, 28, 28), 10, batch_size, torch.device("cpu"))
    assert where == torch.device("cpu")
    return flops


def linear_macs(model: nn.Module) -> tuple[int, int]:
    """(multiply-adds per image of all Linear layers, of the first one)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return sum(m.in_features * m.out_features for m in layers), layers[0].in_features * layers[0].out_features


def test_flop_count_of_the_mlp_gan_step_is_the_hand_count():
    # GAN-MNIST is Linear layers only, so its step's FLOPs can be counted by hand, per image:
    #   D step: G forward 2g (no_grad); D forward on real and fake 4d; D weight grads 4d; D input grads
    #           4(d - d1) (no layer before D's first needs them);
    #   G step: G forward 2g; D forward 2d; D input grads 2d (D frozen: no weight grads); G weight grads
    #           2g; G input grads 2(g - g1).
    # A count that broke (zero, forward only, a missed step) would miss this. Counted without R1 (--r1=0); R1's
    # second backward through D (the default) adds to it.
    module = bench.config.load_script("GAN-MNIST.py")
    cfg = bench.script_config(bench.MODELS["gan"], module, 64)
    models = module.build_models(cfg, (1, 28, 28), 10)
    (g, g1), (d, d1) = linear_macs(models["generator"]), linear_macs(models["discriminator"])
    assert step_flops("gan", 8, R1=0.0) == 8 * (8 * g + 16 * d - 4 * d1 - 2 * g1)
    assert step_flops("gan", 8) > step_flops("gan", 8, R1=0.0)


def test_flop_counts_grow_with_the_network_and_the_batch():
    gan, dcgan = step_flops("gan", 8), step_flops("dcgan", 8)
    assert 0 < gan < dcgan  # the conv GAN does far more arithmetic per image than the MLP GAN
    assert step_flops("dcgan", 16) == 2 * dcgan  # no work per step is independent of the batch
    assert step_flops("vae", 8) > 0


def result(**kw) -> bench.Result:
    fields = dict(model="celeba", script="DCGAN-CelebA.py", batch_size=128, steps=600, repo=1000.0, loader=400.0)
    fields.update(generation=5000.0, flops=2e9, epoch_images=bench.EPOCH_IMAGES["celeba"], peak=100.0)
    return bench.Result(**{**fields, **kw})


def test_table_columns_from_the_rates():
    gan = result(model="gan", script="GAN-MNIST.py", epoch_images=60_000, peak=None, sample_images=4_000)
    gan.switches, gan.setting, gan.fp32 = "amp+channels_last", "auto: amp+channels_last", 400.0
    celeba, gan = rows(bench.table([result(setting="auto = fp32"), gan]))
    assert celeba[COL["setting"]] == "auto = fp32" and celeba[COL["fp32 img/s"]] == celeba[COL["img/s"]] == "1,000.0"
    assert celeba[COL["speed-up"]] == "1.00x"  # measured once
    assert celeba[COL["s/epoch"]] == "202.60" and celeba[COL["s/epoch sample"]] == "-"  # 202,599 images / 1,000 img/s
    assert celeba[COL["GFLOP/img"]] == "2"
    assert celeba[COL["FLOP share"]] == "2%"  # 1,000 img/s x 2 GFLOP = 2 TFLOP/s of 100
    assert celeba[COL["repo / DataLoader"]] == "2.50x"
    assert gan[COL["setting"]] == "auto: amp+channels_last" and gan[COL["fp32 img/s"]] == "400.0"
    assert gan[COL["speed-up"]] == "2.50x"
    assert gan[COL["s/epoch"]] == "60.00" and gan[COL["s/epoch sample"]] == "4.00" and gan[COL["FLOP share"]] == "n/a"


def test_switches_table_has_the_same_columns():
    results = [result(), result(switches="amp", repo=2000.0, generation=10_000.0, peak=200.0)]
    base, amp = rows(bench.table(results, switches_mode=True), SWITCH_COLUMNS)
    assert base[1] == "baseline" and base[5] == "1.00x" and base[10] == "1.00x"
    assert amp[1] == "amp" and amp[5] == "2.00x" and amp[10] == "2.00x"
    assert amp[6] == "101.30" and amp[7] == "2" and amp[8] == "2%"  # s/epoch, GFLOP/img, share of its own limit


def test_switch_variants_share_one_flop_count(tmp_path: Path):
    # what --switches does per model, here with one switch
    plan = bench.Plan(
        dev=torch.device("cpu"), steps=1, warmup=0, rounds=1, batch_size=8, workers=0, quick=True, gen_reps=1,
        gen_batch=64, tmp=tmp_path, peak_tflops=1.0,
    )  # fmt: skip
    bench.mnist_files.write_sample(tmp_path, n_train=64)
    variants = [bench.Speed(device_type="cpu"), bench.Speed(channels_last=True, device_type="cpu")]
    results = [bench.bench_model("dcgan", plan, sw, compare=False) for sw in variants]
    assert list(plan.flops) == [("dcgan", 8)]  # counted once, for every variant
    assert [r.switches for r in results] == ["baseline", "channels_last"]
    assert results[0].flops == results[1].flops > 0 and all(r.loader is None for r in results)
    base, channels_last = rows(bench.table(results, switches_mode=True), SWITCH_COLUMNS)
    assert base[5] == "1.00x" and channels_last[1] == "channels_last"
    assert number(channels_last[6]) == pytest.approx(60_000 / results[1].repo, rel=0.01, abs=0.01)
    assert channels_last[8].endswith("%")
    facts = bench.header(plan, [], "n/a", variants[0], switches_mode=True)
    assert "- FLOP limit: 1 TFLOP/s (--peak-tflops)" in facts
    assert facts[-len(bench.SWITCH_COLUMNS) :] == bench.column_list(bench.SWITCH_COLUMNS)  # the columns it has


def test_defaults_are_sized_for_the_device():
    def steps(argv: list[str], kind: str) -> tuple[int, int, int]:
        args = bench.fill_defaults(bench.parse(argv), torch.device(kind))
        return args.steps, args.warmup, args.rounds

    assert steps([], "cuda") == (200, 20, 3)  # a GPU step takes milliseconds
    assert steps([], "cpu") == steps([], "mps") == (10, 5, 3)
    assert steps(["--quick"], "cuda") == steps(["--quick"], "cpu") == (3, 2, 1)
    assert steps(["--steps", "7", "--warmup", "0"], "cuda") == (7, 0, 3)


@pytest.mark.parametrize("cpus, workers", [(32, 8), (4, 4), (1, 1), (None, 1)])
def test_workers_default_to_the_cpu_count(cpus: int | None, workers: int, monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: cpus)
    assert bench.parse([]).workers == workers
    assert bench.parse(["--workers", "3"]).workers == 3


def test_flop_limits():
    assert speed_module.known_peak("NVIDIA H100 80GB HBM3", amp=True) == 989
    assert speed_module.known_peak("NVIDIA H200", amp=False) == 495
    assert speed_module.known_peak("NVIDIA H100 PCIe", amp=True) == 756
    assert speed_module.known_peak("NVIDIA A100-SXM4-80GB", amp=True) == 312
    assert speed_module.known_peak("Tesla T4", amp=True) is None
    cpu = torch.device("cpu")
    assert bench.peak_for(cpu, bench.Speed(), None) == (None, "n/a on cpu (give --peak-tflops)")
    assert bench.peak_for(cpu, bench.Speed(), 2.0)[0] == 2.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "dcgan,bogus"], "unknown model(s) bogus; choose from: vae, gan, cgan, dcgan, cdcgan, celeba"),
        (["--steps", "0"], "--steps must be positive, got 0"),
        (["--batch-size", "-3"], "--batch-size must be >= 0, got -3"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--fast"], "unrecognized arguments: --fast"),
        (["--peak-tflops", "0"], "--peak-tflops must be positive, got 0"),
        (["--switches", "amp,turbo"], "unknown switch(es) turbo; choose from: " + ", ".join(bench.SWITCHES)),
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def test_idx_files_read_back_through_torchvision(tmp_path: Path):
    from torchvision import datasets

    bench.mnist_files.write_sample(tmp_path, n_train=4100)  # more than the sample's 4,000: tiled
    ds = datasets.MNIST(str(tmp_path), train=True, download=False)
    assert len(ds) == 4100 and ds.data.shape[1:] == (28, 28)
    assert np.array_equal(ds.data[4000].numpy(), ds.data[0].numpy())  # the tiling repeats the digits


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse(["--help"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    options = ("--quick", "--device", "--models", "--out", "--batch-size", "--steps", "--switches", "--compile")
    for option in (*options, "--workers", "--peak-tflops"):
        assert re.search(rf"{option}\b", printed)
    assert "\n".join(bench.column_list()) in printed  # what each column means


# --- no second copy: bench measures each script through its own functions, and defines each column once ---

SCRIPTS = sorted({spec.script for spec in bench.MODELS.values()})


def small(model: str) -> tuple:
    """A benchmarked model's script, a narrow config of it (as bench would run it), its image shape and classes."""
    spec = bench.MODELS[model]
    module = bench.config.load_script(spec.script)
    cfg = {**bench.script_config(spec, module, 16), "NGF": 4, "NDF": 4, "HIDDEN": 16, "CHANNELS": 4}
    shape, n_classes = ((3, 16, 16), 0) if spec.dataset == "celeba" else ((1, 28, 28), 10)
    return module, cfg, shape, n_classes


@pytest.mark.parametrize("model", list(bench.MODELS))
def test_bench_trains_and_draws_by_the_scripts_own_functions(model: str, monkeypatch):
    """bench's step is the script's train_step, fed the script's optimizers (names, models, rates, betas), the
    run's step numbers from 1 and the classes; its images are the script's decode. A copy that drifted fails."""
    module, cfg, shape, n_classes = small(model)
    calls: list[tuple[str, tuple]] = []
    for name in ("train_step", "decode"):
        own = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *args, _own=own, _name=name: calls.append((_name, args)) or _own(*args)
        )
    step, draw = bench.build(module, cfg, shape, n_classes, torch.device("cpu"), bench.Speed(device_type="cpu"))
    x = module.normalise(torch.randint(0, 256, (4, *shape), dtype=torch.uint8))
    step(x, torch.arange(4))
    step(x, torch.arange(4))
    images = draw(3)
    assert [name for name, _ in calls] == ["train_step", "train_step", "decode"]
    (_, first), (_, second), (_, drawn) = calls
    given_cfg, nets, opts, given_x, _, t, classes = first[:7]
    assert given_cfg is cfg and given_x is x and (t, second[5]) == (1, 2) and classes == n_classes
    wanted = module.optimizers(cfg)
    assert list(opts) == list(wanted)  # the checkpoint names, in the script's creation order
    for name, (net, lr, betas) in wanted.items():
        group = opts[name].param_groups[0]
        assert (group["lr"], group["betas"]) == (lr, betas)
        assert all(a is b for a, b in zip(group["params"], nets[net].parameters(), strict=True))
    assert drawn[0] is nets and drawn[1].shape == (3, cfg["LATENT_DIM"])
    assert images.shape == (3, *shape) and 0 <= images.min() and images.max() <= 1  # decode's range


def test_bench_keeps_the_scripts_moving_average(monkeypatch):
    """With EMA on, bench updates the script's averages (`averages(cfg)`) after every step, as a run does."""
    module, cfg, shape, n_classes = small("dcgan")
    updates: list[tuple[int, int]] = []
    update = bench.ema.Averages.update
    monkeypatch.setattr(
        bench.ema.Averages, "update", lambda self, t: updates.append((len(self.entries), t)) or update(self, t)
    )
    for decay, entries in ((0.0, 0), (0.9, 1)):
        assert len(module.averages({**cfg, "EMA": decay})) == entries
        step, _ = bench.build(module, {**cfg, "EMA": decay}, shape, n_classes, torch.device("cpu"), bench.Speed())
        step(module.normalise(torch.randint(0, 256, (4, *shape), dtype=torch.uint8)), torch.arange(4))
    assert updates == [(0, 1), (1, 1)]


def test_bench_holds_no_copy_of_the_scripts_wiring():
    """bench.py names none of the scripts' constants of wiring, networks or step pieces: it asks the script."""
    tree = ast.parse((ROOT / "bench.py").read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    wiring = {"LR", "LR_D", "BETA1", "BETA", "REAL_LABEL", "K_STEPS", "EMA", "generator", "discriminator", "opt_g"}
    assert not (strings | names) & (wiring | {"d_step", "g_step", "sample", "latent_dim"})
    imported = {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "common" for a in n.names
    }
    assert "steps" not in imported  # the GAN step pieces are the scripts' business


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_scripts_main_trains_by_the_functions_bench_measures(script: str):
    """main() builds, optimises, averages and steps by the module-level functions bench.py and generate.py use."""
    tree = ast.parse((ROOT / script).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    called = {n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    module = bench.config.load_script(script)
    shared = {"build_models", "optimizers", "train_step"} | ({"averages"} if hasattr(module, "averages") else set())
    assert shared <= called
    assert "normalise" in {n.id for n in ast.walk(main) if isinstance(n, ast.Name)}
    attributes = [n.attr for n in ast.walk(main) if isinstance(n, ast.Attribute)]
    assert attributes.count("adam") == 1 and not {"d_step", "g_step"} & set(attributes)  # no step of its own
    assert callable(module.decode) and module.normalise in (bench.data.to_gan, bench.data.to_unit)


def test_each_column_is_defined_once():
    """COLUMNS is the one definition: the table's headers, and the meanings in --help, bench.md and docs/speed.md."""
    assert [name for name, _ in bench.COLUMNS] == COLUMNS
    assert [name for name, _ in bench.SWITCH_COLUMNS] == SWITCH_COLUMNS
    docs = (ROOT / "docs" / "speed.md").read_text()
    switch_only = tuple(c for c in bench.SWITCH_COLUMNS if c not in bench.COLUMNS)
    for columns in (bench.COLUMNS, switch_only):
        assert "\n".join(bench.column_list(columns)) in docs, "docs/speed.md: paste bench.column_list() again"
