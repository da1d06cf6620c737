"""The batched forward model on a device without float64 (Apple's ``mps``).

There a float64 tensor can be neither made nor moved ("Cannot convert a MPS Tensor to float64
dtype"). The CPU stands in for such a device: it is added to
:data:`sem_physics.batched.NO_FLOAT64_DEVICES`, and a dispatch mode fails every torch operation
that returns a float64 tensor, as the device would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    batched,
    degrade_torch,
)
from sem_physics.batched import (
    BatchParams,
    ParameterSampler,
    airy_psf_batch,
    settings_dtype,
    wiener_batch,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _NoFloat64(TorchDispatchMode):
    """Every operation returning a float64 tensor raises, as on a device without float64."""

    def __torch_dispatch__(self, func: Any, kinds: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(
            isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_flatten(out)[0]
        ):
            raise TypeError(f"{func} made a float64 tensor on a device without float64")
        return out


@contextmanager
def _cpu_without_float64(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(batched, "NO_FLOAT64_DEVICES", frozenset({"mps", "cpu"}), raising=False)
    with _NoFloat64():
        yield


def _settings(n: int) -> list[DegradationParams]:
    return ParameterRanges().sample_many(np.random.default_rng(3), n)


def test_settings_are_float64_except_on_a_device_without_it():
    assert settings_dtype(None) == settings_dtype("cpu") == torch.float64
    assert settings_dtype("cuda:1") == settings_dtype(torch.device("cuda")) == torch.float64
    assert settings_dtype("mps") == torch.float32
    assert ParameterSampler(device="meta").dtype == torch.float64
    assert BatchParams.from_params(_settings(2), device="meta").rx_px.dtype == torch.float64


def test_the_mode_stands_in_for_the_device():
    """The stand-in refuses what such a device refuses (else the tests below prove nothing)."""
    with _NoFloat64(), pytest.raises(TypeError, match="float64"):
        torch.ones(2).double()


def test_degradation_runs_without_float64_and_gives_the_float64_result(monkeypatch):
    """Settings drawn and stacked, kernels, blur, noise and the Wiener guides: no float64
    anywhere, and the values of the float64 path to float32 rounding."""
    settings = _settings(3)
    images = torch.rand(3, 1, 40, 44, generator=torch.Generator().manual_seed(0)) * 255
    psf = PSFParams(rx_px=4.0, ry_px=2.5, beta=1.2, theta_rad=0.4)
    kernel = torch.from_numpy(airy_psf(psf)).float()  # numpy works in float64: made before

    def run() -> dict[str, Any]:
        sampled = ParameterSampler().step(3, torch.Generator().manual_seed(1))
        stacked = BatchParams.from_params(settings, device="cpu")
        return {
            "sampled": sampled,
            "stacked": stacked,
            "kernels": airy_psf_batch(stacked),
            "blurred": degrade_torch(images, settings, poisson=False, gaussian=False),
            "noisy": degrade_torch(images, settings, torch.Generator().manual_seed(2)),
            "guides": wiener_batch(images, kernel, (0.03, 0.3)),
            "back": stacked.to_params(),
        }

    wide = run()
    with _cpu_without_float64(monkeypatch):
        narrow = run()
    assert narrow["sampled"].rx_px.dtype == narrow["stacked"].rx_px.dtype == torch.float32
    assert wide["stacked"].rx_px.dtype == torch.float64
    narrow["sampled"].check()  # drawn in range (float32 draws: another stream than float64's)
    torch.testing.assert_close(narrow["kernels"], wide["kernels"], rtol=0, atol=1e-6)
    for key in ("blurred", "noisy", "guides"):
        torch.testing.assert_close(narrow[key], wide[key], rtol=1e-5, atol=1e-3)
    for got, given in zip(narrow["back"], settings, strict=True):
        assert got.rx_px == pytest.approx(given.rx_px, rel=1e-6)
        assert got.dose == pytest.approx(given.dose, rel=1e-6)
