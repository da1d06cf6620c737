"""Embedding extraction for clustering diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import sem_models as sm
import torch
from sem_models.imaging import normalize


def test_mean_and_cls_pooling_match_the_encoder(tiny_mae):
    x = torch.rand(5, 1, 32, 32)
    mean = sm.extract_embeddings(tiny_mae, x, pool="mean", batch_size=2)
    cls = sm.extract_embeddings(tiny_mae, x.numpy(), pool="cls", batch_size=5)
    assert mean.shape == cls.shape == (5, 32) and mean.dtype == np.float32
    with torch.no_grad():
        latent = tiny_mae.eval().forward_encoder(normalize(x), 0.0)[0]
    np.testing.assert_allclose(mean, latent[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cls, latent[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean[0], mean[1])  # different images, different embeddings


def test_restoration_model_and_rgb_inputs_are_accepted(tiny_mae):
    x = torch.rand(2, 3, 32, 32)
    a = sm.extract_embeddings(sm.RestorationModel(tiny_mae), x)
    b = sm.extract_embeddings(tiny_mae, x.mean(1, keepdim=True))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pool"):
        sm.extract_embeddings(tiny_mae, x, pool="max")


def test_a_device_other_than_the_models_is_refused(tiny_mae):
    with pytest.raises(ValueError, match=r"weights are on cpu: move the model first"):
        sm.extract_embeddings(tiny_mae, torch.rand(1, 1, 32, 32), device="cuda")


def test_counts_nan_pixels_and_empty_batches_are_refused_by_name(tiny_mae):
    counts = (np.random.default_rng(0).random((2, 1, 32, 32)) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"float images scaled 0\.\.1; got dtype uint8"):
        sm.extract_embeddings(tiny_mae, counts)  # read as 0..1 it gave features of garbage
    with pytest.raises(ValueError, match="images must be a float tensor"):
        sm.extract_embeddings(tiny_mae, torch.from_numpy(counts))
    x = torch.rand(2, 1, 32, 32)
    x[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="images holds NaN"):
        sm.extract_embeddings(tiny_mae, x)  # the second row of features was NaN
    with pytest.raises(ValueError, match="batch_size is a whole number"):
        sm.extract_embeddings(tiny_mae, torch.rand(2, 1, 32, 32), batch_size=0)
    with pytest.raises(ValueError, match="one or more images"):
        sm.extract_embeddings(tiny_mae, torch.rand(0, 1, 32, 32))
    flipped = np.flip(np.random.default_rng(1).random((2, 1, 32, 32)), axis=2)  # a view
    ref = sm.extract_embeddings(tiny_mae, torch.from_numpy(flipped.copy()))
    np.testing.assert_allclose(sm.extract_embeddings(tiny_mae, flipped), ref, rtol=1e-6)


def _fp32_features(mae: sm.MaskedAutoencoder, x: torch.Tensor) -> np.ndarray:
    """Mean-pooled features of the encoder in plain fp32, no autocast."""
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        latent = mae.eval().forward_encoder(normalize(x), 0.0)[0]
    return latent[:, 1:].mean(1).numpy()


def test_features_come_from_an_inference_pass_in_fp32_on_the_cpu(tiny_mae):
    """The encoder runs under inference_mode (no autograd record, even when the caller enables
    grad) and, on the CPU, in fp32 also inside a caller's bf16 autocast: the features equal
    the plain fp32 pass's."""
    x = torch.rand(3, 1, 32, 32)
    ref = _fp32_features(tiny_mae, x)
    seen: list[tuple[bool, bool, torch.dtype]] = []
    tiny_mae.blocks[0].register_forward_hook(
        lambda m, i, out: seen.append(
            (torch.is_inference_mode_enabled(), out.requires_grad, out.dtype)
        )
    )
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = sm.extract_embeddings(tiny_mae, x, batch_size=2)
    assert seen == [(True, False, torch.float32)] * 2
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert tiny_mae.training is False  # the fixture's mode (eval, set by _fp32_features)


def test_the_encoder_runs_in_the_toolkit_s_inference_context_for_its_device(tiny_mae, monkeypatch):
    """bf16 autocast follows the policy of every inference pass
    (:func:`~sem_models.sliding_window.inference_context`: bf16 on a CUDA GPU with native
    bf16 unless ``amp=False``), entered for each batch with the model's device."""
    import importlib

    from sem_models.sliding_window import inference_context

    embeddings = importlib.import_module("sem_models.embeddings")
    calls: list[tuple[torch.device, bool]] = []

    def recording(device, amp=True):
        calls.append((torch.device(device), amp))
        return inference_context(device, amp)

    monkeypatch.setattr(embeddings, "inference_context", recording)
    x = torch.rand(3, 1, 32, 32)
    ref = _fp32_features(tiny_mae, x)
    np.testing.assert_allclose(sm.extract_embeddings(tiny_mae, x, batch_size=2), ref, rtol=1e-5)
    sm.extract_embeddings(tiny_mae, x, batch_size=3, amp=False)
    assert calls == [(torch.device("cpu"), True)] * 2 + [(torch.device("cpu"), False)]
