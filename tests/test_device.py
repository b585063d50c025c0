"""Device selection and seeding (common/device.py)."""

import pytest
import torch

from common import device


def test_auto_and_cpu():
    assert device.pick("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert device.pick("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_unavailable_cuda_is_a_clear_error(name, capsys):
    with pytest.raises(SystemExit) as exc:
        device.pick(name)
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_nonsense_device_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        device.pick("tpu9")
    assert "--device=tpu9" in capsys.readouterr().err


def test_one_seed_repeats_and_rng_state_round_trips():
    device.seed_all(5)
    a = torch.randn(3)
    state = device.rng_state()
    b = torch.randn(3)
    device.seed_all(5)
    assert torch.equal(a, torch.randn(3))
    device.set_rng_state(state)
    assert torch.equal(b, torch.randn(3))
