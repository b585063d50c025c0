"""common/page.py: outputs/index.html from small fake run folders, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from common import page

ODD = 'GAN <b>&"#1"'  # a run name that must be escaped in the page and percent-encoded in its links


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)


def make_run(run: Path, cfg: dict, epochs: int, grids: list[int], scores: dict | None, pictures: bool = True) -> Path:
    """A run folder as a training script leaves it; scores (when given) are the final metrics.csv row."""
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))
    write_csv(
        run / "losses.csv",
        [{"epoch": e, "loss_d": 1.0, "time_s": 2.0, "img_per_s": 100.0} for e in range(1, epochs + 1)],
    )
    for e in grids:  # a different colour per epoch, with a white stripe: never a single colour
        im = Image.new("RGB", (48, 48), (40 * e % 256, 90, 200 - 30 * e))
        im.paste((255, 255, 255), (0, 20, 48, 28))
        im.save(run / "samples" / f"epoch_{e:03d}.png")
    if scores is not None:
        write_csv(run / "metrics.csv", [{"epoch": epochs, **scores}])
    if pictures:
        for name in ("loss.png", "metrics.png"):
            Image.new("RGB", (120, 60), (200, 220, 240)).save(run / name)
        Image.new("RGB", (48, 48), (0, 0, 0)).save(run / "progress.gif")
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"")
    return run


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """Three runs: a conditional GAN with an odd name (3 epochs), a VAE (2 epochs), a DCGAN in progress."""
    root = tmp_path / "outputs"
    base = {"batch_size": 64, "seed": 0, "out_dir": ""}
    gan_scores = {"fid": 12.5, "fid_floor": 1.25, "kid": 0.01, "kid_floor": 0.001, "is": 7.5, "is_real": 9.25}
    gan_scores.update(  # `coverage`: the name of classes_covered before precision/recall/density/coverage
        coverage=9.0, label_acc=0.875, label_acc_real=0.99, **{f"label_acc_{k}": k / 10 for k in range(10)}
    )
    gan = {**base, "script": "GAN-MNIST.py", "dataset": "mnist", "epochs": 3, "lr": 0.0002, "conditional": True}
    make_run(root / ODD, gan, 3, [1, 2, 3], gan_scores)
    vae_scores = {"fid": 30.0, "fid_floor": 1.25, "test_neg_elbo": 101.5, "test_iwae": 98.5}
    vae_scores.update({f"share_{k}": 0.1 for k in range(10)})
    vae = {**base, "script": "VAE-MNIST.py", "dataset": "mnist", "epochs": 2, "lr": 0.001, "beta": 1.0}
    make_run(root / "vae", vae, 2, [1, 2], vae_scores)
    dcgan = {**base, "script": "DCGAN-MNIST.py", "dataset": "fashion-mnist", "epochs": 5, "lr": 0.0002}
    make_run(root / "partial", dcgan, 1, [1, 3], None, pictures=False)  # epoch 2's grid deleted
    (root / "not-a-run").mkdir()
    return root


def columns(text: str, row_class: str) -> list[list[str]]:
    """The cells of every table row with a class, heading first."""
    rows = re.findall(rf'<tr class="{row_class}">(.*?)</tr>', text)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in rows]


def test_page_shows_every_run_escaped_and_offline(outputs):
    path = page.write_index(outputs)
    assert path == outputs / "index.html"
    text = path.read_text()
    assert html.escape(ODD) in text and ODD not in text
    assert f'src="{quote(ODD)}/samples/epoch_003.png"' in text  # relative, percent-encoded: '#' is %23
    assert "%23" in quote(ODD) and f'href="{quote(ODD)}/checkpoints/last.pt"' in text
    assert "not-a-run" not in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<link" not in text  # nothing from the network
    heads = re.findall(r"<thead>.*?</thead>", text)[0]
    assert heads.index(html.escape(ODD)) < heads.index("partial") < heads.index("vae")  # name order
    for cells in (
        ["script", "GAN-MNIST.py", "DCGAN-MNIST.py", "VAE-MNIST.py"],
        ["data set", "mnist", "fashion-mnist", "mnist"],
    ):
        assert f"<th>{cells[0]}</th><td>{cells[1]}</td><td>{cells[2]}</td><td>{cells[3]}</td>" in text


def test_settings_that_differ_have_a_row_each(outputs):
    text = page.write_index(outputs).read_text()
    settings = {cells[0]: cells[1:] for cells in columns(text, "setting")}
    assert settings["lr"] == ["0.0002", "0.0002", "0.001"]
    assert "batch_size" not in settings and "seed" not in settings and "out_dir" not in settings
    assert "epochs" not in settings  # shown as "epochs done: 1 of 5"
    assert settings["settings of only some runs"] == [
        "conditional=true",
        '<span class="muted">&ndash;</span>',
        "beta=1",
    ]
    alone = page.write_index(outputs, [outputs / "vae"]).read_text()
    assert "one run: see all settings" in alone and "partial" not in alone


def test_scores_beside_their_floors_and_per_class_columns(outputs):
    text = page.write_index(outputs).read_text()
    scores = {cells[0]: cells[1:] for cells in columns(text, "score")}
    assert scores["FID"][0] == '12.5 <span class="floor">real 1.25</span>'
    assert scores["label accuracy"][0] == '87.5% <span class="floor">real 99.0%</span>'
    assert scores["classes covered"][0] == "9/10"  # read from an old metrics.csv's `coverage`
    assert scores["test IWAE"] == ['<span class="muted">&ndash;</span>'] * 2 + ["98.5"]
    (classes,) = columns(text, "classes")
    assert "label accuracy per class" in classes[1] and classes[1].count("<i ") == 10
    assert "share of samples per class" in classes[3] and "10.0%" in classes[3]  # share_<k> picked up
    assert page.per_class({"share_T-shirt": 0.5, "share_Bag": 0.5, "label_acc_0": 1.0})[1] == [
        ("T-shirt", 0.5),
        ("Bag", 0.5),
    ]


def test_grids_carry_every_epoch_for_the_slider(outputs):
    text = page.write_index(outputs).read_text()
    assert re.search(r'<input type="range" id="epoch" min="1" max="3" value="3">', text)
    grids = [json.loads(html.unescape(g)) for g in re.findall(r'data-grids="([^"]*)"', text)]
    assert [[e for e, _ in g] for g in grids] == [[1, 2, 3], [1, 3], [1, 2]]
    assert grids[2][-1][1] == "vae/samples/epoch_002.png"
    assert "img.stale{filter:grayscale(1)" in text and "classList.toggle('stale'" in text


def test_missing_files_are_noted(outputs):
    (outputs / "broken").mkdir()
    (outputs / "broken" / "config.json").write_text("{not json")
    text = page.write_index(outputs).read_text()
    notes = {cells[0]: cells[1:] for cells in columns(text, "notes")}["missing"]
    odd, broken, partial, _ = notes
    assert "config.json unreadable" in broken and "no epoch finished yet" in broken and "no sample grids" in broken
    assert odd == "nothing"
    for note in (
        "1 of 5 epochs done",
        "no grid for epoch 2",
        "no metrics.csv",
        "no loss.png",
        "no checkpoints/last.pt",
    ):
        assert note in partial
    assert "no metrics yet" in text and "no progress.gif" in text


def test_empty_or_missing_outputs(tmp_path, capsys):
    text = page.write_index(tmp_path).read_text()
    assert "No runs here yet" in text and "<script>" not in text
    assert page.write_index(tmp_path / "missing") is None
    assert "is not a folder" in capsys.readouterr().out
    (tmp_path / "taken" / "index.html").mkdir(parents=True)  # cannot be written: one line, no exception
    (tmp_path / "taken" / "index.html" / "x").write_text("")
    assert page.write_index(tmp_path / "taken") is None and "cannot write" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["index.html"]  # no temporary file left


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4), with the stdlib only."""

    def __init__(self, binary: str, profile: Path, url: str, timeout: float = 20):
        self.deadline, self.n, self.buffer = time.monotonic() + timeout, 0, b""
        to_chrome, self.write_fd = os.pipe()
        self.read_fd, from_chrome = os.pipe()

        def child() -> None:
            a, b = os.dup(to_chrome), os.dup(from_chrome)  # dup first: the pipe may already sit on fd 3
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic"]
        flags += ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        self.process = subprocess.Popen(
            [binary, *flags, "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,900", url],
            preexec_fn=child,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        try:
            target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its answer (events in between are dropped)."""
        self.n += 1
        message = {"id": self.n, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                left = self.deadline - time.monotonic()
                if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                    raise TimeoutError(f"no answer from chromium to {method}")
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self.n:
                assert "error" not in answer, answer
                return answer["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(5)
        os.close(self.write_fd)
        os.close(self.read_fd)


def test_slider_moves_every_grid_in_chromium(outputs, tmp_path):
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium); the page is not checked in a browser")
    index = page.write_index(outputs)
    browser = Browser(binary, tmp_path / "profile", index.as_uri() + "#epoch=1")
    try:
        loaded = "location.protocol === 'file:' && document.readyState === 'complete' && [...document.images].every(i => i.complete)"
        while not browser.js(loaded):
            time.sleep(0.1)
        state = "[...document.querySelectorAll('img.grid')].map(i => [i.src.split('/').pop(), i.classList.contains('stale'), i.naturalWidth, i.nextElementSibling.textContent])"
        ok = [g[2] for g in browser.js(state)]
        assert ok == [48, 48, 48], "every grid image loads through its relative, percent-encoded path"
        assert [g[:2] for g in browser.js(state)] == [["epoch_001.png", False]] * 3  # from #epoch=1, at load

        def slide(epoch: int) -> list:
            slider = "document.getElementById('epoch')"  # what dragging it does: set the value, fire 'input'
            browser.js(f"{slider}.value = {epoch}, {slider}.dispatchEvent(new Event('input'))")
            return browser.js(state)

        odd, partial, vae = slide(3)
        assert odd[:2] == ["epoch_003.png", False] and partial[:2] == ["epoch_003.png", False]
        assert vae[:2] == ["epoch_002.png", True] and "up to epoch 2" in vae[3]  # the shorter run, greyed
        assert (
            browser.js("location.hash") == "#epoch=3"
            and browser.js("document.getElementById('shown').textContent") == "3"
        )
        odd, partial, vae = slide(2)
        assert odd[:2] == ["epoch_002.png", False] and vae[:2] == ["epoch_002.png", False]
        assert partial[:2] == ["epoch_001.png", True] and "no grid for epoch 2" in partial[3]  # the deleted grid
        for kind in ("keyDown", "keyUp"):
            browser.call(
                "Input.dispatchKeyEvent",
                browser.session,
                type=kind,
                key="ArrowLeft",
                code="ArrowLeft",
                windowsVirtualKeyCode=37,
            )
        assert [g[:2] for g in browser.js(state)] == [["epoch_001.png", False]] * 3
        shot = browser.call("Page.captureScreenshot", browser.session, format="png")["data"]
        (tmp_path / "shot.png").write_bytes(base64.b64decode(shot))
        with Image.open(tmp_path / "shot.png") as im:
            assert im.width >= 1000 and len(im.convert("RGB").getcolors(1 << 24)) > 20  # not blank: many colours
    finally:
        browser.close()
