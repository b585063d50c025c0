"""Several nodes: two torchrun agents as two "nodes" on 127.0.0.1 (c10d rendezvous, gloo), each in its own
working folder, as on two machines; elastic restarts after a real SIGKILL; exits a restart cannot fix."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE_ENV, ROOT, make_idx_dataset
from test_distributed import free_port, torchrun

ENV = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
# R1 off: these tests are about the nodes, and its second backward each step would only slow them (R1 under
# torchrun: test_distributed.py's DCGAN runs, at the defaults)
TINY = ["--dataset=fake", "--ngf=8", "--ndf=8", "--eval_every=0", "--device=cpu", "--r1=0"]


def start_nodes(
    tmp_path: Path, *args: str, max_restarts: int = 0, script: str = "DCGAN-MNIST.py"
) -> list[subprocess.Popen]:
    """Two torchrun agents, one process each, joined by c10d on a free port; node k runs in tmp_path/node<k>."""
    port = free_port()
    agents = []
    for k in range(2):
        node = tmp_path / f"node{k}"
        node.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=job{port}"]
        command += [f"--max-restarts={max_restarts}", "--monitor-interval=0.2", str(ROOT / script), *args]
        log = open(node / "log.txt", "w")  # noqa: SIM115  (closed by finish)
        agents.append(
            subprocess.Popen(command, cwd=node, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
    return agents


def finish(agents: list[subprocess.Popen], tmp_path: Path, timeout: float) -> tuple[list[int], list[str]]:
    """Each agent's exit code and log; an agent still running after `timeout` s is killed (its own process group)
    and the test fails: a hang."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for agent in agents:
            codes.append(agent.wait(timeout=max(deadline - time.monotonic(), 0.1)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a hang: the agents still ran after {timeout}s\n" + "\n".join(logs(tmp_path)))
    finally:
        for agent in agents:
            if agent.poll() is None:  # its workers too: torchrun starts each in a session of its own
                for pid in [*children(agent.pid), agent.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                agent.wait()
    return codes, logs(tmp_path)


def logs(tmp_path: Path) -> list[str]:
    return [(tmp_path / f"node{k}" / "log.txt").read_text() for k in range(2)]


def script_traceback(text: str) -> bool:
    """Whether a log shows a traceback through the repo's own code (torchrun's own summary aside)."""
    return bool(re.search(rf'File "{re.escape(str(ROOT))}/(common/|[A-Z][A-Za-z]*-)', text))


def epochs_of(out: Path) -> list[str]:
    with open(out / "losses.csv") as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)["models"]["generator"]


def test_two_nodes_with_a_shared_folder_train_as_one_agent_with_two_processes(tmp_path):
    shared = tmp_path / "shared"
    agents = start_nodes(tmp_path, *TINY, "--epochs=2", f"--out_dir={shared}")
    codes, texts = finish(agents, tmp_path, timeout=120)
    assert codes == [0, 0], texts
    assert epochs_of(shared) == ["1", "2"]
    assert sum(text.count("Done:") for text in texts) == 1  # rank 0 prints, on whichever node it landed

    single = tmp_path / "single"
    result = torchrun("DCGAN-MNIST.py", *TINY, "--epochs=2", f"--out_dir={single}", timeout=120)
    assert result.returncode == 0, result.stderr
    two_nodes, one_agent = weights(shared), weights(single)
    assert all(torch.equal(two_nodes[name], one_agent[name]) for name in one_agent)  # the same run, number for number


def test_a_worker_killed_after_epoch_1_restarts_and_resumes_every_epoch_once(tmp_path):
    shared = tmp_path / "shared"
    # 64 steps an epoch: long enough that the kill lands while the run goes on
    args = [*TINY, "--epochs=4", "--batch_size=8", f"--out_dir={shared}"]
    agents = start_nodes(tmp_path, *args, max_restarts=1)
    deadline = time.monotonic() + 90
    while not ((shared / "losses.csv").exists() and epochs_of(shared)):  # epoch 1 and its checkpoint are written
        assert time.monotonic() < deadline and all(a.poll() is None for a in agents), logs(tmp_path)
        time.sleep(0.05)
    rank0 = int((shared / ".run").read_text().split()[2])  # the mark names rank 0's process: the one that writes
    os.kill(rank0, signal.SIGKILL)  # a real death: no handler runs, the folder's lock is left behind
    codes, texts = finish(agents, tmp_path, timeout=180)
    assert codes == [0, 0], texts
    assert epochs_of(shared) == ["1", "2", "3", "4"]  # every epoch once
    text = "\n".join(texts)
    assert re.search(r"Resuming from .* after epoch [123]\.", text)
    assert text.count("takes it over") == 1  # the lock the killed rank 0 left: said once
    assert not script_traceback(text)


def test_each_node_with_its_own_out_dir_stops_at_once_with_the_shared_storage_line(tmp_path):
    for k in range(2):  # each node prepares its own DATA_DIR: only the .gz files are there
        raw = make_idx_dataset(tmp_path / f"node{k}" / "data") / "MNIST" / "raw"
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ):
            subprocess.run(["gzip", str(raw / name)], check=True)
    args = ["--dataset=mnist", "--data_dir=data", "--download=False", "--out_dir=out", "--ngf=8", "--ndf=8"]
    agents = start_nodes(tmp_path, *args, "--eval_every=0", "--device=cpu", "--epochs=1")
    start = time.monotonic()
    codes, texts = finish(agents, tmp_path, timeout=60)  # no hang
    assert time.monotonic() - start < 60 and codes == [1, 1]  # torchrun's own code for a failed worker
    for text in texts:  # every process says it, once
        assert text.count("put OUT_DIR on storage every node shares") == 1, text
        assert not script_traceback(text)
    for k in range(2):
        assert (tmp_path / f"node{k}" / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert sum((tmp_path / f"node{k}" / "out" / "checkpoints" / "last.pt").exists() for k in range(2)) == 0


def test_a_bad_flag_under_max_restarts_is_said_once_and_the_job_ends_promptly(tmp_path):
    agents = start_nodes(tmp_path, *TINY, "--latent_dim=0", max_restarts=2)
    codes, texts = finish(agents, tmp_path, timeout=90)
    assert codes == [1, 1]
    for text in texts:
        assert text.count("error: --latent_dim=0") == 1, text  # not once more at each of the 2 restarts
    # torchrun's summary names the worker's own code on one node at least: the other agent may find the rendezvous
    # store gone first (its host ended) and say RendezvousConnectionError instead; which one is torchrun's race
    assert any("exitcode  : 2" in text for text in texts), texts


def test_a_peer_killed_without_restarts_is_one_line_and_exit_6_on_the_other_node(tmp_path):
    shared = tmp_path / "shared"
    agents = start_nodes(tmp_path, *TINY, "--epochs=50", "--batch_size=8", f"--out_dir={shared}")
    deadline = time.monotonic() + 90
    while not ((shared / "losses.csv").exists() and epochs_of(shared)):
        assert time.monotonic() < deadline and all(a.poll() is None for a in agents), logs(tmp_path)
        time.sleep(0.05)
    os.kill(children(agents[1].pid)[0], signal.SIGKILL)
    codes, texts = finish(agents, tmp_path, timeout=120)
    assert codes[1] == 1  # torchrun's code for the killed worker's node
    # the other node's worker: one line, exit 6 (its agent may end before it reports the code, when the
    # agent that hosted the rendezvous was the killed worker's: "the rendezvous host's agent must live")
    assert texts[0].count("lost the job's other processes") == 1, texts[0]
    assert not script_traceback(texts[0])


def test_restarts_repeat_an_exit_no_restart_can_fix_silently_and_only_in_the_same_job(tmp_path, monkeypatch):
    from common import restarts

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    restarts.record(2)
    assert restarts.note_path() is None and not list(tmp_path.iterdir())  # outside torchrun: nothing
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    restarts.record(6)  # a lost peer: a restart may fix it
    restarts.said_before()
    assert not restarts.note_path().exists()
    restarts.record(2)
    with pytest.raises(SystemExit) as stopped:  # a restart torchrun does not count (another node's) stops too
        restarts.said_before()
    assert stopped.value.code == 2 and restarts.note_path().exists()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.raises(SystemExit) as stopped:
        restarts.said_before()
    assert stopped.value.code == 2 and restarts.note_path().exists()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-job")  # another job (or another agent) never reads it
    restarts.said_before()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # the last attempt removes the note
    with pytest.raises(SystemExit):
        restarts.said_before()
    assert not restarts.note_path().exists()


HOLDER = """import pathlib, sys, time
sys.path.insert(0, sys.argv[1])
from common import shared_lock
flag = pathlib.Path(sys.argv[3])
with shared_lock.preparing(pathlib.Path(sys.argv[2]), "MNIST"):
    flag.write_text("held")
    while flag.read_text() == "held":
        time.sleep(0.02)
"""


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        assert process.poll() is None, "the process ended before taking the lock"
        time.sleep(0.02)


def test_a_second_process_waits_for_the_one_preparing_and_says_so(tmp_path):
    target, flags = tmp_path / "data" / "MNIST", [tmp_path / "first", tmp_path / "second"]
    command = [sys.executable, "-c", HOLDER, str(ROOT), str(target)]
    first = subprocess.Popen([*command, str(flags[0])])
    second = None
    try:
        wait_for(flags[0], first)
        second = subprocess.Popen([*command, str(flags[1])], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert second.poll() is None and not flags[1].exists()  # it waits while the first one prepares
        flags[0].write_text("done")
        wait_for(flags[1], second)  # then it takes the lock
        flags[1].write_text("done")
        out, _ = second.communicate(timeout=30)
        assert first.wait(timeout=30) == 0 and second.returncode == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    assert f"waiting for process {first.pid} on" in out  # names the process it waits for
    assert f"to finish preparing MNIST ({target.parent / '.MNIST.lock'})" in out
