"""Sliding-window inference: exact for identity/constant, seamless, batch- and size-agnostic."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import sem_models as sm
import torch
from sem_models.sliding_window import window_starts
from torch import nn


class Identity(nn.Module):
    def forward(self, x):
        return x.clone()


class TileOffset(nn.Module):
    """Adds a different constant to every window it sees: any seam would show as a step."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        offsets = torch.arange(self.calls, self.calls + x.shape[0], dtype=x.dtype) % 7
        self.calls += x.shape[0]
        return x + offsets.view(-1, 1, 1, 1)


def test_identity_model_returns_the_input_exactly():
    img = np.random.default_rng(0).uniform(0, 1, (300, 260)).astype(np.float32)
    out = sm.sliding_window(Identity(), img, window=64, overlap=8, batch_size=3)
    assert isinstance(out, np.ndarray) and out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 100, 150), (3, 70, 90), (1, 1, 40, 33)])
def test_tensor_inputs_keep_type_and_shape(shape):
    x = torch.rand(shape)
    out = sm.sliding_window(Identity(), x, window=32, overlap=4)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    torch.testing.assert_close(out, x)


def test_constant_image_stays_constant_through_a_pointwise_model():
    img = np.full((130, 97), 0.4, dtype=np.float32)
    out = sm.sliding_window(lambda x: torch.tanh(3 * x) + 0.1, img, window=32, overlap=8)
    np.testing.assert_allclose(out, np.tanh(1.2) + 0.1, rtol=1e-6)


def test_constant_in_constant_out_for_a_translation_invariant_model():
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=True)
    img = np.full((200, 180), 0.7, dtype=np.float32)
    out = sm.sliding_window(conv, img, window=48, overlap=8)
    expected = 0.7 * conv.weight.sum().item() + conv.bias.item()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_blending_has_no_seams():
    img = np.zeros((200, 200), dtype=np.float32)
    out = sm.sliding_window(TileOffset(), img, window=64, overlap=16, batch_size=5)
    # Neighbouring windows differ by up to 6; a hard tiling would jump by that much between
    # adjacent pixels. The Hann cross-fade spreads each step over the overlap.
    hard_step = 6.0
    max_step = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert max_step < 0.35 * hard_step
    assert out.min() >= 0 and out.max() <= 6 + 1e-5  # a convex combination of window outputs


def test_results_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    img = torch.rand(130, 170)
    a = sm.sliding_window(conv, img, window=40, overlap=8, batch_size=1)
    b = sm.sliding_window(conv, img, window=40, overlap=8, batch_size=16)
    torch.testing.assert_close(a, b)


def test_full_size_sem_frame_with_the_paper_geometry(tiny_mae):
    """A 1280x960 frame through 224-px windows with 8-px overlap (restoration model, gray)."""
    mae = sm.build_mae(
        "tiny", in_chans=1, img_size=224, embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
    )  # fmt: skip
    calls = []
    model = sm.RestorationModel(mae)
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    img = np.random.default_rng(1).uniform(0, 1, (960, 1280)).astype(np.float32)
    out = sm.sliding_window(model, img, window=224, overlap=8, batch_size=8)
    assert out.shape == (960, 1280) and np.isfinite(out).all()
    # padded to 968 x 1288: ceil((968-224)/216)+1 = 5 rows, ceil((1288-224)/216)+1 = 6 columns
    assert sum(calls) == 5 * 6 and max(calls) <= 8


class _Counting(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def _random_restorer(tiny_mae) -> nn.Module:
    torch.manual_seed(1)
    model = sm.RestorationModel(tiny_mae).eval()
    for p in model.parameters():  # a random model, so that every window position matters
        p.data.normal_(0.0, 0.2)
    return model


def test_an_image_of_exactly_one_window_is_one_forward_pass(tiny_mae):
    model = _Counting(_random_restorer(tiny_mae))
    img = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    out = sm.sliding_window(model, img, window=32, overlap=8)
    assert model.calls == [1]
    with torch.no_grad():
        single = model.inner(img)
    assert single.std() > 0.05  # the model does not map everything to one value
    torch.testing.assert_close(out, single, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(25, 30), (27, 32), (32, 27), (32, 32), (1, 3, 32, 29)])
@pytest.mark.parametrize("refiner_width", [0, 4])
def test_an_image_of_at_most_one_window_is_the_models_own_single_pass(
    tiny_mae, shape, refiner_width
):
    """The model pads an image to its patch grid as the sliding window pads it to the window
    (symmetric reflection): for an image whose size rounded up to the 8-px patch is the
    32-px window, the window's output is the model's own single pass ``model(x)``."""
    torch.manual_seed(1)
    inner = sm.RestorationModel(tiny_mae, refiner_width=refiner_width).eval()
    for p in inner.parameters():  # a random model, so that every pixel matters
        p.data.normal_(0.0, 0.2)
    model = _Counting(inner)
    x = torch.rand(
        shape if len(shape) == 4 else (1, 1, *shape), generator=torch.Generator().manual_seed(4)
    )
    out = sm.sliding_window(model, x, window=32, overlap=8)
    assert model.calls == [1]
    with torch.no_grad():
        single = inner(x)
    assert single.std() > 0.05
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-5)


def test_an_image_smaller_than_a_window_is_the_single_pass_on_its_reflection(tiny_mae):
    """A window larger than the image's patch grid: the single pass of its reflection."""
    model = _Counting(_random_restorer(tiny_mae))
    img = np.random.default_rng(4).uniform(0, 1, (20, 27)).astype(np.float32)
    out = sm.sliding_window(model, img, window=48, overlap=8)
    assert model.calls == [1]
    padded = np.pad(img, ((0, 28), (0, 21)), mode="symmetric")  # reflect up to one window
    with torch.no_grad():
        single = model.inner(torch.from_numpy(padded)[None, None])[0, 0, :20, :27].numpy()
    np.testing.assert_allclose(out, single, rtol=1e-6, atol=1e-6)


def test_an_axis_that_fits_one_window_gets_one_row_of_windows(tiny_mae):
    model = _Counting(_random_restorer(tiny_mae))
    img = torch.rand(32, 100, generator=torch.Generator().manual_seed(5))
    out = sm.sliding_window(model, img, window=32, overlap=8, batch_size=100)
    # one row; columns: width padded by 4 + 4 to 108, starts 0, 24, 48, 72, 76
    assert model.calls == [5] and out.shape == img.shape
    # Image columns 0..19 lie in the first window only (the second starts at padded column 24):
    # there the blend is that window's output. The padding is a symmetric reflection.
    left = torch.cat([img[:, :4].flip(1), img[:, :28]], dim=1)
    with torch.no_grad():
        first = model.inner(left[None, None])[0, 0]
    torch.testing.assert_close(out[:, :20], first[:, 4:24], rtol=1e-5, atol=1e-5)


def test_batched_windows_equal_one_window_per_forward_for_a_vit(tiny_mae):
    model = _random_restorer(tiny_mae)
    img = np.random.default_rng(6).uniform(0, 1, (90, 75)).astype(np.float32)
    one = sm.sliding_window(model, img, window=32, overlap=8, batch_size=1)
    many = sm.sliding_window(model, img, window=32, overlap=8, batch_size=64)
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-5)


def test_window_starts_cover_the_range_and_end_flush():
    for size in (224, 225, 500, 968):
        starts = window_starts(size, 224, 216)
        assert starts[0] == 0 and starts[-1] == size - 224
        assert all(b - a <= 216 for a, b in itertools.pairwise(starts))


def test_hann_weights_are_positive_everywhere():
    w = sm.hann_weights(224, eps=1e-3)
    assert w.min().item() == pytest.approx(1e-3) and w.max().item() <= 1.0
    torch.testing.assert_close(w, w.T)


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="overlap"):
        sm.sliding_window(Identity(), np.zeros((10, 10)), window=8, overlap=8)
    with pytest.raises(ValueError, match="one image"):
        sm.sliding_window(Identity(), np.zeros((2, 1, 10, 10)), window=8, overlap=2)
    with pytest.raises(ValueError, match="to \\(B, C'"):
        sm.sliding_window(lambda x: x[:, :, :4], np.zeros((10, 10)), window=8, overlap=2)
    nan = np.zeros((10, 10))
    nan[3, 3] = np.nan  # was a NaN output over every window that saw the pixel
    with pytest.raises(ValueError, match="NaN or inf"):
        sm.sliding_window(Identity(), nan, window=8, overlap=2)
    with pytest.raises(ValueError, match="empty image"):
        sm.sliding_window(Identity(), np.zeros((0, 10)), window=8, overlap=2)
    with pytest.raises(ValueError, match="whole pixels"):
        sm.sliding_window(Identity(), np.zeros((10, 10)), window=8.5, overlap=2)
    with pytest.raises(ValueError, match="channels last"):
        sm.restore_image(Identity(), np.zeros((80, 100, 3)), window=8, overlap=2)


def test_restore_image_works_on_the_0_255_scale():
    img = np.random.default_rng(2).uniform(0, 255, (90, 120)).astype(np.float32)
    out = sm.restore_image(lambda x: x, img, window=32, overlap=8)
    np.testing.assert_allclose(out, img, rtol=1e-5, atol=1e-3)
    clipped = sm.restore_image(lambda x: 2 * x, img, window=32, overlap=8)
    assert clipped.max() == 255.0 and clipped.dtype == np.float32


class PatchGrid(nn.Module):
    """Adds a pattern locked to the window's own 16-px patch grid (period 8 px along both axes,
    as the shipped model's faint artefact): ``a cos(2 pi u / 8) + a cos(2 pi v / 8)``."""

    def __init__(self, amplitude: float = 0.1):
        super().__init__()
        self.amplitude = amplitude

    def forward(self, x):
        rows, cols = (torch.arange(n, dtype=x.dtype) for n in x.shape[-2:])
        wave_r = self.amplitude * torch.cos(2 * torch.pi * rows / 8)
        wave_c = self.amplitude * torch.cos(2 * torch.pi * cols / 8)
        return x + wave_r[None, None, :, None] + wave_c[None, None, None, :]


def _power_at(image: np.ndarray, period: int) -> float:
    """Mean power of the image's rows and columns at ``1 / period`` cycles/px (interior)."""
    core = image[32:-32, 32:-32]
    n = core.shape[0] // period * period
    k = n // period
    rows = np.abs(np.fft.rfft(core[:n, :n], axis=1)[:, k]) ** 2
    cols = np.abs(np.fft.rfft(core[:n, :n], axis=0)[k, :]) ** 2
    return float(rows.mean() + cols.mean()) / n**2


@pytest.mark.parametrize(("window", "patch"), [(128, 16), (224, 16), (64, 16), (32, 16)])
def test_grid_averaging_overlap_starts_windows_at_every_quarter_patch_phase(window, patch):
    overlap = sm.grid_averaging_overlap(window, patch)
    stride = window - overlap
    assert 0 <= overlap < window and stride <= window // 2
    assert {(i * stride) % patch for i in range(4)} == {0, patch // 4, patch // 2, 3 * patch // 4}


@pytest.mark.parametrize(("window", "patch"), [(128, 14), (16, 16), (8, 16), (2, 16)])
def test_grid_averaging_overlap_is_a_valid_overlap_for_any_geometry(window, patch):
    overlap = sm.grid_averaging_overlap(window, patch)
    assert 0 <= overlap < window and window - overlap <= max(1, window // 2)


def test_grid_averaging_overlap_averages_a_patch_grid_pattern_out():
    image = np.zeros((480, 640), np.float32)
    model = PatchGrid()
    pattern = _power_at(model(torch.from_numpy(image)[None, None])[0, 0].numpy(), 8)
    paper = _power_at(sm.sliding_window(model, image, window=128, overlap=8), 8)
    overlap = sm.grid_averaging_overlap(128, 16)
    averaged = _power_at(sm.sliding_window(model, image, window=128, overlap=overlap), 8)
    assert paper > 0.5 * pattern  # every window on grid phase 0 or 8: the pattern survives
    assert averaged < pattern / 20  # windows a quarter patch apart: it cancels
    x = np.random.default_rng(0).random((200, 300)).astype(np.float32)
    out = sm.sliding_window(Identity(), x, window=128, overlap=overlap)
    np.testing.assert_allclose(out, x, atol=1e-6)  # an identity model is still exact


def test_a_device_other_than_the_models_is_refused_before_any_window():
    """device= moves the image, not the model: a model on the CPU asked to run on CUDA would
    fail inside its first layer; it is refused with what to do, and device=None is the
    model's own (a weightless callable runs where the image is)."""
    model = nn.Conv2d(1, 1, 3, padding=1)
    img = np.zeros((40, 40), np.float32)
    for call in (
        lambda: sm.sliding_window(model, img, 16, 4, device="cuda"),
        lambda: sm.restore_image(model, img, 16, 4, device="cuda:1"),
    ):
        with pytest.raises(ValueError, match=r"weights are on cpu: move the model first"):
            call()
    assert sm.sliding_window(model, img, 16, 4, device="cpu").shape == (40, 40)
    assert sm.model_device(model, None) == torch.device("cpu")
    assert sm.model_device(lambda x: x, None, default="meta") == torch.device("meta")
    assert sm.model_device(lambda x: x, "meta") == torch.device("meta")
    on_meta = nn.Conv2d(1, 1, 3, device="meta")  # a device type without an index: the model's
    assert sm.model_device(on_meta, "meta") == next(on_meta.parameters()).device


def test_a_callers_cpu_autocast_does_not_reach_the_fp32_forward(tiny_mae):
    """Restoring runs in fp32 on a CPU: an autocast the caller left open is switched off."""
    model = _random_restorer(tiny_mae)
    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = sm.sliding_window(model, image, window=32, overlap=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sm.sliding_window(model, image, window=32, overlap=8)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)


class _ModeSpy(nn.Module):
    """Identity that counts ``train()`` calls and records its mode at every forward. The first
    forward waits (up to 1 s) for a second one to start; the second waits (up to 1 s) for
    ``first_done``."""

    def __init__(self):
        super().__init__()
        self.mode_changes = 0
        self.seen: list[bool] = []
        self.other_started = threading.Event()
        self.first_done = threading.Event()
        self.w = nn.Parameter(torch.zeros(()))

    def train(self, mode: bool = True):
        self.mode_changes += 1
        return super().train(mode)

    def forward(self, x):
        self.seen.append(self.training)
        if len(self.seen) == 1:
            self.other_started.wait(1.0)
        else:
            self.other_started.set()
            self.first_done.wait(1.0)
        return x + self.w


def test_a_model_in_eval_mode_is_not_touched():
    spy = _ModeSpy().eval()
    spy.mode_changes = 0
    spy.other_started.set()  # one call: no wait
    sm.sliding_window(spy, np.zeros((40, 40), np.float32), window=32, overlap=8)
    assert spy.mode_changes == 0 and not spy.training


def test_concurrent_calls_on_a_training_model_run_in_eval_and_leave_it_training():
    """Two threads on a model in training mode: each forward runs in eval mode, and the model
    is in training mode after both (the second call waits for the first)."""
    spy = _ModeSpy().train()
    img = np.zeros((32, 32), np.float32)

    def first():
        sm.sliding_window(spy, img, 32, 8)
        spy.first_done.set()

    threads = [
        threading.Thread(target=first),
        threading.Thread(target=sm.sliding_window, args=(spy, img, 32, 8)),
    ]
    threads[0].start()
    while not spy.seen:  # the first call is inside its forward
        threading.Event().wait(0.005)
    threads[1].start()
    for t in threads:
        t.join()
    assert spy.seen == [False, False]
    assert spy.training


@pytest.mark.parametrize("batch_size", [2.5, 0, -1, "8"])
def test_batch_size_must_be_a_whole_number(batch_size):
    with pytest.raises(ValueError, match="batch_size is a whole number of windows"):
        sm.sliding_window(Identity(), np.zeros((40, 40), np.float32), 32, 8, batch_size)


def test_restore_image_blends_with_the_grid_averaging_overlap_by_default(tiny_mae):
    """``overlap=None``: :func:`grid_averaging_overlap` of the model's patch (8 px here), which
    averages a ViT's patch-grid pattern out where the paper's 8-px overlap keeps it."""
    model = _random_restorer(tiny_mae)
    img = np.random.default_rng(7).uniform(20, 200, (70, 90)).astype(np.float32)
    overlap = sm.grid_averaging_overlap(32, 8)
    assert overlap != 8
    expected = sm.restore_image(model, img, window=32, overlap=overlap)
    np.testing.assert_array_equal(sm.restore_image(model, img, window=32), expected)
    # a callable without a patch size: the paper's 8 px
    same = sm.restore_image(lambda x: x, img, window=32)
    np.testing.assert_allclose(same, img, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), 0, -1, 0.0, True, "1e-3", None])
def test_eps_must_be_a_finite_number_above_zero(eps):
    with pytest.raises(ValueError, match=r"eps is the weight floor, a finite number > 0; got eps="):
        sm.sliding_window(Identity(), np.zeros((40, 40), np.float32), 32, 8, eps=eps)
    with pytest.raises(ValueError, match=r"eps is the weight floor"):
        sm.hann_weights(32, eps=eps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": "64"}, r"window and overlap are whole pixels; got window='64'"),
        ({"window": 64.0}, r"window and overlap are whole pixels; got window=64\.0"),
        ({"window": True}, r"window and overlap are whole pixels; got window=True"),
        ({"window": 32, "overlap": "8"}, r"whole pixels; got window=32, overlap='8'"),
        ({"window": 32, "overlap": 8.0}, r"whole pixels; got window=32, overlap=8\.0"),
        ({"window": 32, "batch_size": "8"}, r"batch_size is a whole number of windows"),
        ({"window": 32, "batch_size": True}, r"batch_size is a whole number of windows"),
        ({"window": 32, "batch_size": 8.0}, r"batch_size is a whole number of windows"),
    ],
)
def test_size_arguments_of_the_wrong_type_are_named(kwargs, message, tiny_mae):
    img = np.zeros((40, 40), np.float32)
    for model in (Identity(), tiny_mae):  # tiny_mae has a patch_size: the default overlap path
        with pytest.raises(ValueError, match=message):
            sm.restore_image(model, img, **kwargs)
    with pytest.raises(ValueError, match=message):
        sm.sliding_window(Identity(), img, **{"overlap": 8, **kwargs})


@pytest.mark.parametrize("device", ["bogus", "cuda:x", 1.5, object()])
def test_an_unknown_device_is_named(device):
    img = np.zeros((40, 40), np.float32)
    message = r"device=.* is not a device name \(cpu, cuda, cuda:N, mps, meta"
    with pytest.raises(ValueError, match=message):
        sm.restore_image(Identity(), img, 32, 8, device=device)
    with pytest.raises(ValueError, match=message):
        sm.sliding_window(lambda x: x, img, 32, 8, device=device)


@pytest.mark.parametrize("model", [None, "model", np.zeros(3)])
def test_a_model_that_is_not_callable_is_named(model):
    img = np.zeros((40, 40), np.float32)
    message = r"model must be a torch\.nn\.Module or a callable"
    with pytest.raises(TypeError, match=message):
        sm.restore_image(model, img, 32)
    with pytest.raises(TypeError, match=message):
        sm.sliding_window(model, img, 32, 8)


def test_any_cpu_device_name_runs_a_model_on_the_cpu(tiny_mae):
    model = _random_restorer(tiny_mae)
    img = np.random.default_rng(4).uniform(20, 200, (40, 52)).astype(np.float32)
    ref = sm.restore_image(model, img, window=32)
    ref01 = sm.sliding_window(model, img / 255.0, window=32)
    for device in ("cpu:0", torch.device("cpu", 0), torch.device("cpu")):
        np.testing.assert_array_equal(sm.restore_image(model, img, window=32, device=device), ref)
        out = sm.sliding_window(model, img / 255.0, window=32, device=device)
        np.testing.assert_array_equal(out, ref01)


def test_the_blend_is_float32_whatever_torch_default_dtype(tiny_mae):
    model = _random_restorer(tiny_mae)
    img = torch.rand(45, 50, generator=torch.Generator().manual_seed(5))
    ref = sm.sliding_window(model, img, window=32)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = sm.sliding_window(model, img, window=32)
        out_np = sm.sliding_window(model, img.numpy(), window=32)
    finally:
        torch.set_default_dtype(before)
    assert out.dtype == torch.float32 and out_np.dtype == np.float32  # as documented
    torch.testing.assert_close(out, ref)


def test_a_pretrained_mae_given_as_the_restorer_is_named(tiny_mae):
    img = np.random.default_rng(6).uniform(20, 200, (40, 40)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(loss, prediction, mask\).*RestorationModel\(mae\)"):
        sm.restore_image(tiny_mae, img, window=32)
