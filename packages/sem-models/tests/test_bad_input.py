"""Bad input to the public functions is refused in one clear line (or warned about), never
turned into clipped garbage or a run of minutes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import sem_models as sm
import torch


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(20, 200, (48, 40)).astype(np.float32)


def test_a_window_far_larger_than_the_image_is_refused_at_once(image):
    # CPU time of this process (all its threads): other work on the machine does not count
    t0 = time.process_time()
    with pytest.raises(ValueError, match=r"window=10000 px .* at most 512 px"):
        sm.sliding_window(_identity, image, window=10000)
    assert time.process_time() - t0 < 1
    assert sm.sliding_window(_identity, image, window=224).shape == image.shape  # the default


def test_channels_last_and_non_real_images_are_refused(image):
    rgb = np.stack([image] * 3, axis=-1)
    with pytest.raises(ValueError, match="channels last"):
        sm.sliding_window(_identity, rgb, window=32)
    for bad in (image > 100, image.astype(np.complex64)):
        with pytest.raises(ValueError, match="real numeric"):
            sm.sliding_window(_identity, bad, window=32)
        with pytest.raises(ValueError, match="real numeric"):
            sm.restore_image(_identity, bad, window=32)


def test_restore_image_refuses_images_off_the_grey_scale_and_warns_on_0_to_1(image):
    with pytest.raises(ValueError, match=r"scale it to 0..255, e.g. multiply by 255/\d+ = "):
        sm.restore_image(_identity, (image * 257).astype(np.uint16), window=32)
    with pytest.raises(ValueError, match="inverted image"):
        sm.restore_image(_identity, -image, window=32)
    with pytest.warns(UserWarning, match="0..1 image"):
        sm.restore_image(_identity, image / 255.0, window=32)
    with pytest.warns(UserWarning, match="0..1 image"):  # a resampled 0..1 image overshoots 1
        sm.restore_image(_identity, image / image.max() * 1.03, window=32)
    out = sm.restore_image(_identity, image, window=32)
    np.testing.assert_allclose(out, image, atol=1e-3)  # the identity model gives it back


def test_devices_that_cannot_be_used_here_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"device='bogus' is not a device name"):
        sm.build_mae("tiny", device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            sm.build_mae("tiny", device="cuda")
    mae = sm.build_mae("tiny", in_chans=1, img_size=32, patch_size=16)
    sm.save_model(mae, tmp_path / "m")
    with pytest.raises(ValueError, match="not a device name"):
        sm.load_model(tmp_path / "m", device="bogus")


def test_a_numpy_array_given_to_the_mae_is_named():
    mae = sm.build_mae("tiny", in_chans=1, img_size=32, patch_size=16)
    with pytest.raises(TypeError, match=r"expected a torch tensor .*\(torch\.from_numpy"):
        mae(np.zeros((1, 1, 32, 32), np.float32))


def test_a_folder_given_as_a_weights_file_is_named(tmp_path):
    mae = sm.build_mae("tiny", in_chans=1, img_size=32, patch_size=16)
    with pytest.raises(sm.ExternalWeightsError, match="is a folder; give the MAE weights file"):
        sm.load_external_mae(tmp_path, mae)
