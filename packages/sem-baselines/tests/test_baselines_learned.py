"""U-Net / MRN networks, Noise2Void's blind spot, training loops, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from baselines_testkit import TINY, TINY_FIT, lines_image, psnr
from safetensors.torch import load_file, save_file
from sem_baselines import RestorerConfigError, get_restorer, tiled_apply
from sem_baselines.learned.noise2void import blind_spot_mask
from sem_baselines.learned.training import native_bf16
from sem_baselines.nets import MRNConfig, MultiScaleRefocusNet, UNet, UNetConfig
from sem_models.checkpoint import CheckpointError
from sem_physics import ParameterRanges, degrade

TRAIN = [lines_image((96, 96), seed=s) for s in range(3)]


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 1, 37, 50), (1, 1, 5, 9)])
def test_unet_keeps_shape_and_adds_its_correction_to_the_input(shape):
    net = UNet(UNetConfig(depth=3, width=4))
    x = torch.rand(shape)
    y = net(x)
    assert y.shape == x.shape
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    torch.testing.assert_close(net(x), x)  # residual: zero correction gives the input back
    plain = UNet(UNetConfig(depth=2, width=4, residual=False))
    assert plain(x).shape == x.shape


def test_mrn_emits_three_scales_coarse_to_fine():
    net = MultiScaleRefocusNet(MRNConfig(width=4))
    x = torch.rand(2, 1, 48, 64)
    outs = net(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(12, 16), (24, 32), (48, 64)]
    # residual wiring: with zero correction heads, 1/4 is the pooled input, 1/2 and 1 its
    # bilinear up-samplings, coarse to fine
    for head in net.heads:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    outs = net(x)
    coarse = F.avg_pool2d(x, 4)
    up = lambda t, s: F.interpolate(t, size=s, mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(outs[0], coarse)
    torch.testing.assert_close(outs[1], up(coarse, (24, 32)))
    torch.testing.assert_close(outs[2], up(up(coarse, (24, 32)), (48, 64)))


def test_blind_spot_mask_counts_sources_and_never_leaks_the_masked_value():
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(3, 1, 40, 36)
    masked, mask = blind_spot_mask(y, 0.1, 5, gen)
    count = round(0.1 * 40 * 36)
    assert mask.shape == y.shape and mask.dtype == torch.bool
    assert mask.sum(dim=(1, 2, 3)).tolist() == [count] * 3
    torch.testing.assert_close(masked[~mask], y[~mask])
    # each replacement is the value of another, unmasked pixel within ±5 px (reflected)
    for n in range(3):
        for iy, ix in mask[n, 0].nonzero().tolist():
            ys, xs = slice(max(iy - 5, 0), iy + 6), slice(max(ix - 5, 0), ix + 6)
            window, wmask = y[n, 0, ys, xs], mask[n, 0, ys, xs]
            hits = (window == masked[n, 0, iy, ix]) & ~wmask
            assert hits.any(), (n, iy, ix)
            assert masked[n, 0, iy, ix] != y[n, 0, iy, ix]
    # the receptive input does not depend on the original values under the mask at all
    y2 = torch.where(mask, torch.rand(y.shape) + 5.0, y)
    masked2, mask2 = blind_spot_mask(y2, 0.1, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mask2, mask)
    torch.testing.assert_close(masked2, masked)


def test_noise2void_loss_sees_only_masked_pixels():
    r = get_restorer("n2v", **TINY["n2v"])
    clean = torch.from_numpy(lines_image((32, 32), seed=1))[None, None].repeat(2, 1, 1, 1)
    batch = r.make_batch(
        clean,
        ParameterRanges().sample_many(np.random.default_rng(0), 2),
        torch.Generator().manual_seed(0),
    )
    base = r.training_loss(batch)
    changed = dict(batch, target=torch.where(batch["mask"], batch["target"], 1e3))
    torch.testing.assert_close(r.training_loss(changed), base)
    changed = dict(batch, target=torch.where(batch["mask"], batch["target"] + 0.5, 0))
    assert r.training_loss(changed) > base
    with torch.no_grad():  # the mean squared error over the masked pixels, by hand
        sq = (r.network(batch["input"]).double() - batch["target"].double()) ** 2
        want = sq[batch["mask"]].mean()
    assert float(base.detach()) == pytest.approx(float(want), rel=1e-6)


def test_noise2void_loss_makes_no_host_sync():
    """No op that reads a device value to the host (a boolean mask's count, ``.item()``): on a
    GPU each would stall every training step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    r = get_restorer("n2v", **TINY["n2v"])
    clean = torch.from_numpy(lines_image((32, 32), seed=1))[None, None].repeat(2, 1, 1, 1)
    params = ParameterRanges().sample_many(np.random.default_rng(0), 2)
    batch = r.make_batch(clean, params, torch.Generator().manual_seed(0))
    with Ops():
        r.training_loss(batch)
    syncing = ("nonzero", "_local_scalar_dense", "masked_select", "index.Tensor")
    assert seen and not [f for f in seen if any(k in f for k in syncing)], seen


def test_noise2noise_targets_are_independent_realisations():
    r = get_restorer("n2n", **TINY["n2n"])
    clean = torch.full((64, 1, 16, 16), 100.0)
    params = [ParameterRanges().midpoint()] * 64
    b = r.make_batch(clean, params, torch.Generator().manual_seed(0))
    d = (b["input"] - b["target"]) * 255
    # same mean, independent noise: var(y1 - y2) = 2 (z / dose + sigma^2), z = a * 100 + b
    z = 1.045 * 100 + 13
    assert float(d.mean()) == pytest.approx(0.0, abs=0.2)
    assert float(d.var()) == pytest.approx(2 * (z / 25.5 + 5.5**2), rel=0.05)


@pytest.mark.parametrize("name", ["n2n", "n2v", "mrn"])
def test_training_lowers_the_loss(name):
    r = get_restorer(name, **TINY[name])
    gen = torch.Generator().manual_seed(99)
    rng = np.random.default_rng(99)
    from sem_baselines.learned.training import sample_patches

    clean = torch.from_numpy(sample_patches(TRAIN, 16, 32, rng))
    fixed = r.make_batch(clean, ParameterRanges().sample_many(rng, 16), gen)
    with torch.no_grad():
        before = float(r.training_loss(fixed))
    res = r.fit(
        TRAIN,
        epochs=2,
        steps_per_epoch=15,
        batch_size=8,
        patch_size=32,
        lr=3e-3,
        seed=1,
        progress=False,
    )
    with torch.no_grad():
        after = float(r.training_loss(fixed))
    assert after < 0.9 * before
    assert len(res.history) == 2 and res.best_epoch in (0, 1)


def test_fit_is_deterministic_and_keeps_the_best_validation_epoch():
    def run():
        r = get_restorer("mrn", **TINY["mrn"])
        res = r.fit(
            TRAIN[:2],
            val_images=TRAIN[2:],
            epochs=3,
            seed=5,
            progress=False,
            ranges=ParameterRanges(),
            **{k: v for k, v in TINY_FIT.items() if k != "epochs"},
        )
        return r, res

    (r1, res1), (r2, res2) = run(), run()
    assert res1.history == res2.history
    for a, b in zip(
        r1.network.state_dict().values(), r2.network.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    vals = [h["val_loss"] for h in res1.history]
    assert res1.best_epoch == int(np.argmin(vals)) and res1.best_loss == min(vals)


def test_fit_rejects_bad_arguments():
    r = get_restorer("n2n", **TINY["n2n"])
    with pytest.raises(RestorerConfigError, match="epoks"):
        r.fit(TRAIN, epoks=1)
    with pytest.raises(ValueError, match=r"train_images\[0\].*patch_size=64"):
        r.fit([np.zeros((20, 200), np.float32)], patch_size=64)
    with pytest.raises(ValueError, match="empty"):
        r.fit([])
    with pytest.raises(ValueError, match="at least 16 px"):
        r.fit([np.zeros((12, 200), np.float32)])


def test_fit_picks_a_patch_that_fits_the_images():
    r = get_restorer("n2v", **TINY["n2v"])
    # 40-px images: the default 128-px patch shrinks to 40 px
    res = r.fit([lines_image((40, 90), seed=0)], epochs=1, steps_per_epoch=1, progress=False)
    assert res.history[0]["train_loss"] > 0


def test_load_rejects_a_folder_of_another_method(tmp_path):
    get_restorer("n2n", **TINY["n2n"]).save(tmp_path / "m")
    with pytest.raises(RestorerConfigError, match="'n2n', not 'n2v'"):
        get_restorer("n2v").load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        get_restorer("n2v").load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["n2v", "n2n", "mrn"])
def test_load_refuses_nan_or_inf_weights_naming_the_file_and_tensors(tmp_path, name):
    """A saved restorer whose weights hold NaN (a diverged training) loaded without complaint
    and restored every pixel as NaN; now the file and the tensors are named, and the restorer
    it was loaded into keeps its network and settings."""
    get_restorer(name, **TINY[name]).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    first, last = next(iter(state)), list(state)[-1]
    state[first].view(-1)[0] = float("nan")
    state[last].view(-1)[-2:] = torch.tensor([float("inf"), -float("inf")])
    save_file(state, str(weights))
    target = get_restorer(name, **TINY[name], init_seed=7)
    before = {k: v.clone() for k, v in target.network.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        target.load(tmp_path / "m")
    message = str(info.value)
    assert message.startswith(f"{weights}: NaN or infinite weights in {first} (1 of ")
    assert f"{last} (2 of {state[last].numel()})" in message and message.count(" of ") == 2
    after = target.network.state_dict()
    assert target.config.init_seed == 7 and not target.trained
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_tiling_is_exact_for_a_local_operator():
    kernel = torch.rand(1, 1, 5, 5)

    def blur(x):  # output depends on inputs within 2 px; replicate padding at the border
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel)

    x = torch.rand(1, 1, 150, 97)
    torch.testing.assert_close(tiled_apply(blur, x, tile=40, margin=2), blur(x))
    torch.testing.assert_close(tiled_apply(blur, x, tile=64, margin=8), blur(x))
    with pytest.raises(ValueError, match="tile > 2"):
        tiled_apply(blur, x, tile=16, margin=8)


@pytest.mark.filterwarnings("ignore:.*has no trained weights:UserWarning")
def test_learned_restore_tiles_large_images():
    r = get_restorer("n2n", unet={"depth": 2, "width": 4}, tile_px=48, margin_px=12)
    r.fit(TRAIN, progress=False, **TINY_FIT)
    img = lines_image((130, 101), seed=9)
    whole = get_restorer("n2n", unet={"depth": 2, "width": 4}, tile_px=512)
    whole.network.load_state_dict(r.network.state_dict())
    tiled, ref = r.restore(img), whole.restore(img)
    assert tiled.shape == img.shape
    # a depth-2 U-Net sees ~20 px: with 12 px of context the tiles agree to well below 1 grey level
    assert float(np.abs(tiled - ref).mean()) < 0.5


def test_non_finite_loss_stops_and_keeps_the_best_weights():
    r = get_restorer("n2n", **TINY["n2n"])
    original = r.training_loss
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        loss = original(batch)
        return loss * float("nan") if calls["n"] > 3 else loss

    r.training_loss = flaky  # epoch 0: 3 good steps; epoch 1: NaN at its first step
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = r.fit(TRAIN, epochs=3, steps_per_epoch=3, batch_size=2, patch_size=32, progress=False)
    assert res.stopped_early and res.best_epoch == 0 and len(res.history) == 1
    assert all(torch.isfinite(p).all() for p in r.network.parameters())


# Noise only (PSF far below a pixel, no gain/offset, Gaussian sigma 15) for the denoisers; a
# fixed 3-px blur with weak noise for the MRN. ~150 Adam steps of a small net, a few CPU seconds.
_NOISE_ONLY = ParameterRanges(
    rx_px=(0.3, 0.3), ry_px=(0.3, 0.3), gain=(1, 1), offset=(0, 0), sigma=(15, 15), dose=(1e6, 1e6)
)
_BLUR = ParameterRanges(
    rx_px=(3, 3), ry_px=(3, 3), gain=(1, 1), offset=(0, 0), sigma=(2, 2), dose=(1e6, 1e6)
)


@pytest.mark.parametrize(
    ("name", "config", "ranges"),
    [
        ("n2n", {"unet": {"depth": 2, "width": 8}}, _NOISE_ONLY),
        ("n2v", {"unet": {"depth": 2, "width": 8}}, _NOISE_ONLY),
        ("mrn", {"net": {"width": 8}}, _BLUR),
    ],
)
def test_short_training_restores_what_the_method_is_trained_for(name, config, ranges):
    train = [lines_image((96, 96), seed=s, period_px=24) for s in range(4)]
    clean = lines_image((96, 96), seed=10, period_px=24)
    degraded = degrade(clean, ranges.midpoint(), rng=1)
    r = get_restorer(name, **config)
    r.fit(
        train,
        ranges=ranges,
        epochs=1,
        steps_per_epoch=150,
        batch_size=8,
        patch_size=32,
        lr=3e-3,
        progress=False,
    )
    assert psnr(clean, r.restore(degraded)) > psnr(clean, degraded) + 3.0


@pytest.mark.parametrize(
    ("setting", "fit_kw", "dtype"),
    [
        ("auto", {}, None),  # auto: bf16 where the hardware has it (see below)
        ("bf16", {}, torch.bfloat16),
        ("bf16", {"precision": "fp32"}, torch.float32),  # a fit keyword wins over the config
        ("fp32", {"precision": "bf16"}, torch.bfloat16),
    ],
)
def test_train_precision_sets_the_arithmetic_of_the_forward_passes(setting, fit_kw, dtype):
    r = get_restorer("n2n", train_precision=setting, device="cpu", **TINY["n2n"])
    seen: set[torch.dtype] = set()
    first = next(m for m in r.network.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    result = r.fit(TRAIN, val_images=TRAIN[:1], progress=False, **TINY_FIT, **fit_kw)
    if dtype is None:
        dtype = torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32
    assert seen == {dtype}  # training and validation forward passes alike
    assert all(p.dtype == torch.float32 for p in r.network.parameters())  # fp32 weights
    assert np.isfinite(result.last_train_loss)


def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    return set(lines[0].split(":", 1)[1].split()) if lines else None


def test_native_bf16_on_the_cpu_agrees_with_the_processor_flags():
    """auto precision trains in bf16 exactly on CPUs that compute it in hardware."""
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this system (not Linux)")
    expected = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert native_bf16(torch.device("cpu")) is expected
    assert native_bf16(torch.device("meta")) is False


def test_native_bf16_on_a_gpu_excludes_emulated_bf16(monkeypatch):
    """A V100 or T4 reports bf16 as supported by emulation (slower than fp32): not native."""
    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # emulated only

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert native_bf16(torch.device("cuda", 0)) is False and asked == [False]


def test_noise2noise_with_a_focused_target_trains_towards_the_noisy_focused_image():
    """target='focused': the target is the focused image with fresh detector noise (mean the
    image itself, variance level/dose + sigma^2), not another blurred realisation."""
    r = get_restorer("n2n", unet={"depth": 2, "width": 4}, target="focused")
    p = ParameterRanges().midpoint().model_copy(update={"gain": 1.3, "offset": 20.0})
    clean = torch.full((64, 1, 16, 16), 100.0)
    batch = r.make_batch(clean, [p] * 64, torch.Generator().manual_seed(0))
    target = batch["target"].double() * 255
    se = float(np.sqrt((100 / p.dose + p.sigma**2) / target.numel()))
    assert abs(float(target.mean()) - 100.0) < 5 * se  # not gain * 100 + offset = 150
    assert float(target.var()) == pytest.approx(100 / p.dose + p.sigma**2, rel=0.1)


def test_mrn_loss_is_the_sum_of_l1_over_its_three_scales():
    torch.manual_seed(0)
    r = get_restorer("mrn", net={"width": 4})
    clean = torch.rand(2, 1, 32, 32) * 255
    params = ParameterRanges().sample_many(np.random.default_rng(0), 2)
    batch = r.make_batch(clean, params, torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = r.network(batch["input"])
        t = batch["target"]
        want = sum(
            F.l1_loss(o, F.avg_pool2d(t, s) if s > 1 else t)
            for o, s in zip(outs, (4, 2, 1), strict=True)
        )
        assert float(r.training_loss(batch)) == pytest.approx(float(want), rel=1e-5)


def test_a_step_reads_its_loss_from_the_device_once_and_logs_the_same_numbers(monkeypatch):
    """Each training step reads its loss from the device once (every read waits for the
    device: two per step kept a GPU from overlapping the update with the next batch), a
    validation pass once for all its batches; the history holds the epoch means of the very
    losses the loop computed, summed in step order as before."""
    import sys

    from sem_baselines.learned import training

    r = get_restorer("n2n", device="cpu", train_precision="fp32", **TINY["n2n"])
    original = r.training_loss
    computed: list[tuple[bool, float]] = []  # (training?, value) of every loss, in order

    def recorded(batch):
        loss = original(batch)
        computed.append((r.network.training, loss.detach().clone().double().numpy().item()))
        return loss

    r.training_loss = recorded
    reads: list[str] = []

    def counting(name):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == training.__file__:
                reads.append(name)  # a read from the device in fit's own code
            return real(self, *args, **kwargs)

        return counted

    for name in ("__float__", "__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    epochs, steps, n_val = 2, 3, 3  # validation: batches of 2 and 1 patches
    result = r.fit(
        TRAIN,
        val_images=TRAIN[:1],
        epochs=epochs,
        steps_per_epoch=steps,
        batch_size=2,
        patch_size=32,
        val_patches=n_val,
        progress=False,
    )
    monkeypatch.undo()
    assert len(reads) == epochs * (steps + 1), reads
    train = [v for training_mode, v in computed if training_mode]
    val = [v for training_mode, v in computed if not training_mode]
    assert len(train) == epochs * steps and len(val) == epochs * 2
    for epoch, row in enumerate(result.history):
        total = 0.0
        for v in train[epoch * steps : (epoch + 1) * steps]:
            total += v
        assert row["train_loss"] == total / steps
        assert row["val_loss"] == float(np.mean(val[epoch * 2 : (epoch + 1) * 2]))
    assert (result.first_train_loss, result.last_train_loss) == (train[0], train[-1])
