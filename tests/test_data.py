"""Data loading (IDX files in torchvision's layout, the sample, fake), the image grid, and batch drawing."""

import os
import socket
import struct
import subprocess
import sys

import pytest
import torch
from conftest import OFFLINE_ENV, ROOT, make_idx_dataset

from common import data
from common.batches import Batches


def test_torchvision_idx_files_load_as_uint8_on_device(mnist_root):
    ds = data.load("mnist", mnist_root, download=False)
    assert ds.name == "mnist" and ds.shape == (1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and len(ds.train) == 256 and len(ds.test) == 128
    train, _ = data.load_sample()
    assert torch.equal(ds.train.images, train.images[:256])  # the very digits that were written


def test_idx_files_read_as_torchvisions_mnist_class_reads_them(mnist_root):
    from torchvision import datasets

    ds = data.load("mnist", mnist_root, download=False)
    for split, train in ((ds.train, True), (ds.test, False)):
        theirs = datasets.MNIST(root=str(mnist_root), train=train, download=False)
        assert torch.equal(split.images, theirs.data.unsqueeze(1)) and torch.equal(split.labels, theirs.targets)


@pytest.mark.parametrize(
    ("shape", "nrow"), [((16, 1, 28, 28), 8), ((13, 1, 28, 28), 5), ((7, 3, 32, 32), 3), ((1, 1, 4, 4), 8)]
)
def test_the_grid_is_torchvisions_make_grid(shape, nrow):
    from torchvision.utils import make_grid

    from common.plots import tile

    images = torch.rand(shape)
    assert torch.equal(tile(images, nrow), make_grid(images, nrow=nrow, padding=2, pad_value=1.0))


@pytest.mark.parametrize("script", ["VAE-MNIST.py", "DCGAN-MNIST.py"])
def test_a_script_reaches_its_first_step_without_torchvision_or_matplotlib(mnist_root, script):
    """Start-up imports only what the first step needs: torchvision (1.5 s) is for downloads, pyplot for figures."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('script', {str(ROOT / script)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "from common import classifier, data, evaluation, run\n"
        f"data.load('mnist', {str(mnist_root)!r}, download=False)\n"
        "print(sorted(m for m in ('torchvision', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_fashion_mnist_reads_gzipped_files_placed_by_hand(tmp_path):
    import gzip

    root = make_idx_dataset(tmp_path, "FashionMNIST")
    for f in (root / "FashionMNIST" / "raw").iterdir():
        f.with_name(f.name + ".gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    ds = data.load("fashion-mnist", root, download=False)
    assert ds.name == "fashion-mnist" and len(ds.train) == 256
    assert ds.classes[9] == "Ankle boot"


def test_sample_is_real_balanced_digits():
    train, test = data.load_sample()
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    # real digits: mostly black background with a bright stroke, not noise
    x = train.images.float() / 255
    assert 0.08 < x.mean() < 0.2 and (x > 0.5).float().mean() > 0.05


def test_mnist_falls_back_to_the_sample_offline(tmp_path, monkeypatch, capsys):
    for k, v in OFFLINE_ENV.items():
        monkeypatch.setenv(k, v)
    ds = data.load("mnist", tmp_path / "empty", download=True)
    assert ds.name == "mnist-sample" and len(ds.train) == 4000
    assert "REAL-DIGIT SAMPLE" in capsys.readouterr().out


def test_offline_with_no_proxy_the_fallback_imports_no_torchvision(tmp_path):
    """The real fault: no mirror's name resolves (this machine), no proxy. The sample is loaded at once."""
    hosts = [host for hosts in data.MIRRORS.values() for host in hosts]
    if any(data.resolves(host) for host in hosts):
        pytest.skip("a mirror's name resolves here: this machine is online")
    code = (
        "import sys\n"
        "from common import data\n"
        f"ds = data.load('mnist', {str(tmp_path / 'empty')!r}, download=True)\n"
        "print(ds.name, 'torchvision' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "Download of mnist failed: no network (ossci-datasets.s3.amazonaws.com, yann.lecun.com" in out.stdout
    assert "REAL-DIGIT SAMPLE" in out.stdout
    assert out.stdout.strip().endswith("mnist-sample False"), out.stdout + out.stderr


def test_a_proxy_leaves_the_download_to_torchvision(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert data._offline("MNIST") is None  # the proxy resolves names: torchvision tries, and says what failed


def test_offline_is_said_without_the_real_fault_too(monkeypatch):
    """The same decision on a machine that is online: the names made not to resolve."""
    for key in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(key)

    def no_such_host(*args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    assert (
        data._offline("FashionMNIST")
        == "no network (fashion-mnist.s3-website.eu-central-1.amazonaws.com: no such host)"
    )


@pytest.mark.parametrize("folder", ["MNIST", "FashionMNIST"])
def test_the_mirrors_are_torchvisions(folder):
    from urllib.parse import urlsplit

    from torchvision import datasets

    assert data.MIRRORS[folder] == tuple(urlsplit(url).hostname for url in getattr(datasets, folder).mirrors)


def test_fashion_mnist_offline_names_the_four_files(tmp_path, monkeypatch, capsys):
    for k, v in OFFLINE_ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exc:
        data.load("fashion-mnist", tmp_path / "empty", download=True)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "FashionMNIST/raw"):
        assert name in err


def test_fake_has_the_right_shape():
    ds = data.load("fake", "unused", download=False)
    assert ds.shape == (1, 28, 28) and ds.train.labels.max() < 10


@pytest.mark.parametrize("n, batch_size", [(100, 32), (64, 64), (257, 16), (10, 3)])
def test_batches_of_one_size_each_sample_at_most_once_per_epoch(n, batch_size):
    split = data.Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))
    batches = Batches(split, batch_size, seed=1)
    got = [labels for _, labels in batches.epoch(3)]
    assert len(got) == len(batches) == n // batch_size and {len(b) for b in got} == {batch_size}  # no short last batch
    seen = torch.cat(got).tolist()
    assert len(set(seen)) == len(seen) == n - n % batch_size  # the remainder sits this epoch out
    # shuffled differently each epoch (so a different remainder sits out), identically for the same (seed, epoch)
    assert not torch.equal(batches.indices(3)[0], batches.indices(4)[0])
    assert torch.equal(torch.cat(batches.indices(3)), torch.cat(Batches(split, batch_size, 1).indices(3)))
    # over epochs every sample is trained on
    assert set(torch.cat([torch.cat(batches.indices(e)) for e in range(1, 40)]).tolist()) == set(range(n))


def test_a_resumed_epoch_skips_exactly_the_batches_done():
    split = data.Split(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    batches = Batches(split, 8, seed=2)
    whole = [labels for _, labels in batches.epoch(5)]
    rest = [labels for _, labels in batches.epoch(5, skip=2)]
    assert len(rest) == len(whole) - 2 and all(torch.equal(a, b) for a, b in zip(whole[2:], rest, strict=True))


def test_ranks_draw_disjoint_shards_of_one_permutation():
    split = data.Split(torch.zeros(101, 1, 2, 2, dtype=torch.uint8), torch.arange(101))
    shards = [torch.cat(Batches(split, 8, seed=0, rank=r, world_size=2).indices(1)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 48  # 50 each, in 6 whole batches of 8
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_batch_larger_than_data_is_an_error(capsys):
    split = data.Split(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    with pytest.raises(SystemExit):
        Batches(split, 11, seed=0)
    assert "--batch_size=11 is larger than the 10" in capsys.readouterr().err


def test_normalisation_ranges():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert data.to_gan(x).tolist() == [-1.0, 1.0]
    assert data.to_unit(x).tolist() == [0.0, 1.0]


def test_describe_command_prints_counts_and_saves_a_preview(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "common.data", "mnist-sample"], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "train: 4000 images (0: 400, 1: 400" in result.stdout
    assert (tmp_path / "outputs" / "data" / "mnist-sample.png").stat().st_size > 1000


# --- broken files put in place by hand: one line and exit 2, never a silent fall back to the sample ---


def _refused(root, capsys, download=False) -> str:
    with pytest.raises(SystemExit) as exc:
        data.load("mnist", root, download=download)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_a_truncated_idx_file_says_which_and_how_many_bytes(mnist_root, capsys):
    path = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100_000])
    err = _refused(mnist_root, capsys)
    assert str(path) in err and "100,000 bytes of the 200,720 its header promises" in err, err
    assert "--download=True" in err and "sample" not in err
    _refused(mnist_root, capsys, download=True)  # downloading would not replace it either: it is there


def test_a_truncated_gz_is_damaged_and_leaves_no_half_extracted_file(mnist_root, capsys):
    import gzip

    raw = mnist_root / "MNIST" / "raw"
    for f in raw.iterdir():
        f.with_name(f.name + ".gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:2000])
    err = _refused(mnist_root, capsys)
    assert f"{gz} is damaged" in err, err
    assert not (raw / "train-images-idx3-ubyte").exists() and not list(raw.glob(".*"))


def test_labels_that_do_not_match_the_images_in_number(tmp_path, capsys):
    train, _ = data.load_sample()
    raw = make_idx_dataset(tmp_path) / "MNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte"  # a whole IDX file of 100 labels beside 256 images
    labels.write_bytes(struct.pack(">II", 0x801, 100) + train.labels[:100].numpy().astype("uint8").tobytes())
    err = _refused(tmp_path, capsys)
    assert "holds 100 labels but" in err and "256 images" in err, err


def test_a_file_that_is_no_idx_file(mnist_root, capsys):
    path = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"<html>not found</html>")  # what a proxy's error page saved under the name looks like
    assert "is not an MNIST labels file" in _refused(mnist_root, capsys)


def test_some_files_missing_offline_names_them(mnist_root, capsys):
    (mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    err = _refused(mnist_root, capsys)
    assert "but not t10k-images-idx3-ubyte" in err, err


def test_a_broken_file_stops_the_script_before_it_trains(mnist_root, tmp_path):
    path = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100_000])
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "DCGAN-MNIST.py"), f"--data_dir={mnist_root}", "--download=False",
         f"--out_dir={out}", "--device=cpu"],
        cwd=ROOT, env={**OFFLINE_ENV}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "100,000 bytes of the 200,720" in result.stderr and "Traceback" not in result.stderr
    assert "SAMPLE" not in result.stdout and not out.exists()
