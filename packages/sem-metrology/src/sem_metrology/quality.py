"""Image-quality metrics: PSNR, SSIM (scikit-image), LPIPS (lpips package), NIQE (pyiqa).

Images are (H, W) grayscale arrays on a stated intensity scale, ``data_range`` (default 255:
the project's 0..255 convention). PSNR and SSIM need only numpy and scikit-image; LPIPS and
NIQE import torch, lpips and pyiqa when first called (the ``quality`` extra), so importing
this module never needs torch.

Nothing is downloaded. LPIPS needs two weight files: the ImageNet weights of its torchvision
backbone (looked up in torch's hub cache, ``$TORCH_HOME/hub/checkpoints/``, or given as
``weights_path``) and its linear calibration layers (shipped inside the lpips wheel). NIQE uses
the pristine-model parameters shipped in this package (``data/niqe_pris_params.npz``, from
basicsr, Apache-2.0; they reproduce the official MATLAB NIQE), handed to pyiqa as a ``.mat``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sem_physics.cli_support import first_line
from sem_physics.optional import require
from sem_physics.validation import refuse_sem_image

from ._args import real_arg
from ._inputs import check_real_dtype
from .errors import MetrologyInputError

__all__ = [
    "LPIPS_BACKBONES",
    "WeightsNotFoundError",
    "lpips_backbone_path",
    "lpips_distance",
    "niqe",
    "niqe_params_mat",
    "noise_ceiling_psnr",
    "noise_sigma",
    "psnr",
    "ssim",
]

LpipsNet = Literal["alex", "vgg", "squeeze"]

#: torchvision builder and ImageNet checkpoint file name of each LPIPS backbone.
LPIPS_BACKBONES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}
_DOWNLOAD_ROOT = "https://download.pytorch.org/models/"
_LPIPS_MIN_SIZE = 32  # AlexNet's conv1 (stride 4) and two 3x3/2 poolings need >= 31 px
_NIQE_MIN_SIZE = 96  # NIQE works on 96 x 96 blocks


class WeightsNotFoundError(FileNotFoundError):
    """A weight file a metric needs is not on this machine (nothing is downloaded)."""


_QUALITY_EXTRA = "sem-metrology[quality]"  # torch, torchvision, lpips, pyiqa


def _real_image(x: Any, name: str) -> np.ndarray:
    """``x`` as float64, refused (naming ``name``) when it is an SEM image object or its dtype
    is bool, complex or not numeric: the validator of every metric here."""
    refuse_sem_image(x, name)
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists, objects numpy cannot hold
        raise MetrologyInputError(f"{name} is not an array: {err}") from None
    check_real_dtype(arr, name)
    return arr.astype(np.float64)


def _data_range(data_range: Any) -> float:
    """``data_range`` as a float, refused unless a real finite number > 0 (not a bool)."""
    return real_arg("data_range", data_range, " > 0", lambda v: v > 0)


def _pair(ref: Any, img: Any, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = _real_image(ref, "ref"), _real_image(img, "img")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"ref and img must be 2-D grayscale (H, W), got {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"ref and img must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"ref and img are empty, shape {a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("ref and img must not contain NaN or inf")
    data_range = _data_range(data_range)
    peak = max(float(np.abs(a).max()), float(np.abs(b).max()))
    if peak > 1.5 * data_range or 0.0 < peak <= data_range / 200.0:
        warnings.warn(
            f"ref and img reach {peak:g} on a data_range of {data_range:g}: another intensity "
            "scale? (0..255 images take data_range=255, 0..1 images data_range=1)",
            stacklevel=3,
        )
    return a, b


def psnr(ref: Any, img: Any, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB): ``10 log10(data_range² / MSE(ref, img))``.

    scikit-image's ``peak_signal_noise_ratio`` with an explicit ``data_range`` (the span of the
    intensity scale, 255 for the project's 0..255 images, not the images' own min/max).
    Returns ``inf`` for identical images.
    """
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pair(ref, img, data_range)
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=data_range))


def noise_sigma(image: Any) -> float:
    """Standard deviation of an image's white noise, in its own intensity units.

    scikit-image's ``estimate_sigma``: the median absolute finest-scale diagonal wavelet
    coefficient / 0.6745 (Donoho's robust estimator), which edges barely move. Noise that is
    correlated between neighbouring pixels is under-estimated. A noise-free image gives 0.0
    or a value at rounding level (a constant image; one whose diagonal coefficients are all
    exactly zero, e.g. all zeros, gives 0.0, not NaN), and :func:`noise_ceiling_psnr` ``inf``.
    """
    from skimage.restoration import estimate_sigma

    a = _real_image(image, "image")
    if a.ndim != 2:
        raise ValueError(f"image must be 2-D grayscale (H, W), got shape {a.shape}")
    if min(a.shape) < 8:
        raise ValueError(f"noise_sigma needs an image of at least 8x8 pixels, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("image must not contain NaN or inf")
    with warnings.catch_warnings():  # the median of no coefficient: numpy's empty-slice warning
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(estimate_sigma(a))
    return sigma if np.isfinite(sigma) else 0.0  # every diagonal coefficient exactly zero


def noise_ceiling_psnr(reference: Any, data_range: float = 255.0) -> float:
    """PSNR (dB) that a perfect, noise-free restoration would score against a noisy reference.

    A focused micrograph used as the reference carries its own shot noise of std σ, independent
    of anything a restoration can see once the blur has removed its high frequencies; the
    expected MSE of any output is then at least σ², so the expected PSNR is at most
    ``10 log10(data_range² / σ²)`` with σ from :func:`noise_sigma`. Returns ``inf`` for a
    noise-free reference (σ below 1e-9 of the data range: rounding in the wavelet transform;
    a constant image is noise-free).
    """
    data_range = _data_range(data_range)
    sigma = noise_sigma(reference)
    if sigma <= 1e-9 * data_range:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / sigma**2))


def ssim(ref: Any, img: Any, data_range: float = 255.0) -> float:
    """Mean structural similarity (scikit-image's ``structural_similarity`` defaults).

    7×7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances, constants
    ``C_i = (K_i · data_range)²`` with ``data_range`` the span of the intensity scale (255 for
    the project's 0..255 images). 1 for identical images.
    """
    from skimage.metrics import structural_similarity

    a, b = _pair(ref, img, data_range)
    if min(a.shape) < 7:
        raise ValueError(f"ssim needs images of at least 7x7 pixels, got {a.shape}")
    return float(structural_similarity(a, b, data_range=data_range))


def lpips_backbone_path(net: LpipsNet = "alex", weights_path: str | Path | None = None) -> Path:
    """Location of the ImageNet backbone weights LPIPS ``net`` needs; raises if absent.

    ``weights_path`` when given, else torch's hub cache
    (``torch.hub.get_dir()/checkpoints/<file>``, i.e. ``$TORCH_HOME/hub/checkpoints``).

    Raises
    ------
    WeightsNotFoundError naming the file, where it was looked for and how to provide it.
    ValueError for an unknown ``net``.
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    builder, filename = LPIPS_BACKBONES[net]
    if weights_path is not None:
        path = Path(weights_path)
        where = f"weights_path={str(path)!r}"
    else:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / filename
        where = "torch's hub cache"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"LPIPS ({net}) needs torchvision's ImageNet {builder} weights '{filename}', not "
            f"found at {path} ({where}). Nothing is downloaded at run time: fetch "
            f"{_DOWNLOAD_ROOT}{filename} once into {path.parent} (or run "
            f"`python -c \"import torchvision; torchvision.models.{builder}(weights='DEFAULT')\"` "
            "on a machine with network access and copy $TORCH_HOME/hub/checkpoints), "
            "or pass weights_path=... to lpips_distance."
        )
    return path


def _lpips_linear_path(net: str) -> Path:
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"LPIPS linear-layer weights {path} are missing: they ship inside the lpips wheel; "
            "reinstall it (`pip install --force-reinstall lpips`)"
        )
    return path


def _nonfinite_tensors(state: Any) -> list[tuple[str, int, int]]:
    """``(name, count, size)`` of each floating-point tensor of the loaded weights ``state``
    (a mapping) that holds NaN or inf, in the file's order: such weights score every pair NaN
    without complaint. Each tensor is screened by its sum (non-finite when a value is), and
    counted only then: a full count of VGG16's 138 million values would take seconds."""
    import torch

    found = []
    for name, tensor in dict(state).items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            values = tensor.detach()
            if not bool(torch.isfinite(values.sum())):  # an overflowing sum counts 0 below
                count = int((~torch.isfinite(values)).sum())
                if count:
                    found.append((str(name), count, values.numel()))
    return found


def _nonfinite_message(
    path: str | Path, found: list[tuple[str, int, int]], consequence: str
) -> str:
    """``PATH: NaN or infinite weights in a (2 of 64), b (1 of 3), c (1 of 8) and 4 more
    tensors; CONSEQUENCE``: the words of every weights loader of the toolkit
    (``sem_models.checkpoint.nonfinite_message``, written again here: sem-metrology does not
    depend on sem-models)."""
    shown = ", ".join(f"{name} ({count} of {size})" for name, count, size in found[:3])
    more = len(found) - 3
    if more > 0:
        shown += f" and {more} more tensor{'s' if more > 1 else ''}"
    return f"{path}: NaN or infinite weights in {shown}; {consequence}"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=4)
def _lpips_model(net: str, backbone: str, device: str) -> Any:
    """LPIPS network with both weight files loaded explicitly (``weights_only=True``); a file
    whose weights hold NaN or inf is refused naming it and the tensors (ValueError)."""
    import lpips
    import torch
    import torchvision

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    builder_name, filename = LPIPS_BACKBONES[net]
    builder = getattr(torchvision.models, builder_name)(weights=None)
    try:
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        builder.load_state_dict(state)
    except Exception as err:  # RuntimeError/KeyError (wrong keys), UnpicklingError (not torch)
        first = first_line(err)
        if "weights_only" in str(err) or "Weights only load failed" in str(err):
            first = "it holds Python objects beyond tensors, which are never unpickled here"
        raise ValueError(
            f"{backbone} is not a torchvision {builder_name} state dict: {first}"
        ) from err
    found = _nonfinite_tensors(state)
    if found:
        why = (
            "lpips_distance would return NaN (a damaged file: fetch it again from "
            f"{_DOWNLOAD_ROOT}{filename})"
        )
        raise ValueError(_nonfinite_message(backbone, found, why))
    # lpips' backbone holds the torchvision ``features`` modules in slices, named by index.
    features = builder.features
    for name, module in model.net.named_children():
        if name.startswith("slice"):
            for idx, layer in module.named_children():
                layer.load_state_dict(features[int(idx)].state_dict())
    lin_path = _lpips_linear_path(net)
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    found = _nonfinite_tensors(lin_state)
    if found:
        why = (
            "lpips_distance would return NaN (a damaged lpips installation: reinstall it, "
            "`pip install --force-reinstall lpips`)"
        )
        raise ValueError(_nonfinite_message(lin_path, found, why))
    missing, unexpected = model.load_state_dict(lin_state, strict=False)
    # ``lins.<k>`` aliases ``lin<k>`` (same modules): the file names the latter.
    lin_missing = [k for k in missing if k.startswith("lin") and not k.startswith("lins.")]
    if lin_missing or unexpected:
        raise ValueError(
            f"LPIPS linear weights do not fit: missing {lin_missing}, extra {unexpected}"
        )
    return model.eval().to(device)


def _to_lpips_tensor(x: np.ndarray, data_range: float, device: str) -> Any:
    import torch

    t = torch.from_numpy(np.clip(x / data_range, 0.0, 1.0) * 2.0 - 1.0).float()
    return t[None, None].expand(1, 3, *x.shape).to(device)


def lpips_distance(
    ref: Any,
    img: Any,
    net: LpipsNet = "alex",
    weights_path: str | Path | None = None,
    *,
    data_range: float = 255.0,
    device: str | None = None,
) -> float:
    """LPIPS perceptual distance (lpips package, v0.1; 0 = identical, larger = more different).

    Grayscale images are clipped to ``[0, data_range]``, mapped to ``[-1, 1]`` and repeated to
    three channels, as LPIPS expects. The backbone's ImageNet weights come from ``weights_path``
    or torch's hub cache (see :func:`lpips_backbone_path`); the linear layers from the lpips
    wheel. Both are loaded with ``weights_only=True`` and refused (ValueError naming the file
    and the tensors) when they hold NaN or inf; nothing is downloaded.

    Parameters
    ----------
    ref, img : (H, W) arrays on the ``0..data_range`` scale (H, W >= 32).
    net : ``'alex'`` (default, the paper's choice), ``'vgg'`` or ``'squeeze'``.
    weights_path : the backbone checkpoint file (torchvision state dict).
    device : torch device; default CUDA when available, else CPU.
    """
    a, b = _pair(ref, img, data_range)
    if min(a.shape) < _LPIPS_MIN_SIZE:
        raise ValueError(
            f"lpips_distance needs images of at least {_LPIPS_MIN_SIZE}x{_LPIPS_MIN_SIZE} pixels "
            f"(the backbone's pooling stages), got {a.shape}"
        )
    # one line naming the extra if absent; lpips first: torch alone takes seconds to import
    for module in ("lpips", "torch", "torchvision"):
        require(module, _QUALITY_EXTRA, "lpips_distance")
    backbone = lpips_backbone_path(net, weights_path)
    import torch

    dev = device or _default_device()
    model = _lpips_model(net, str(backbone.resolve()), dev)
    with torch.inference_mode():
        try:
            d = model(_to_lpips_tensor(a, data_range, dev), _to_lpips_tensor(b, data_range, dev))
        except RuntimeError as err:  # e.g. VGG's deeper pooling on a small image
            raise ValueError(
                f"LPIPS ({net}) cannot score images of shape {a.shape}: {err}"
            ) from err
    return float(d.reshape(-1)[0].item())


def _niqe_npz() -> bytes:
    return (resources.files("sem_metrology") / "data" / "niqe_pris_params.npz").read_bytes()


def _own_cache_folder() -> Path:
    """A folder of the system temporary directory that only this user can write: its own
    ``sem_metrology-<uid>`` (created private), or a fresh private one when that name is taken
    by someone else or writable by others (a shared /tmp)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"sem_metrology-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if uid is not None and (info.st_uid != uid or info.st_mode & 0o022 or folder.is_symlink()):
            raise PermissionError(f"{folder} belongs to another user or is shared")
    except OSError:
        return Path(tempfile.mkdtemp(prefix="sem_metrology-"))
    return folder


def _holds(path: Path, params: Any) -> bool:
    """Whether the ``.mat`` file ``path`` holds exactly the shipped parameters."""
    import scipy.io

    try:
        saved = scipy.io.loadmat(path)
        return all(
            np.array_equal(np.ravel(saved[mat]), np.ravel(params[npz]))
            for mat, npz in (("mu_prisparam", "mu_pris_param"), ("cov_prisparam", "cov_pris_param"))
        )
    except Exception:  # unreadable, another format, missing keys: not ours
        return False


def niqe_params_mat(cache_dir: str | Path | None = None) -> Path:
    """The shipped NIQE pristine parameters as the ``.mat`` file pyiqa reads (created once).

    Keys ``mu_prisparam`` (1×36) and ``cov_prisparam`` (36×36). Written atomically to
    ``cache_dir`` (default: a private ``sem_metrology-<uid>`` folder of the system temporary
    directory), named by the content hash of the source. A file found there is used only when
    it holds exactly the shipped values (one planted in a shared folder would otherwise change
    every NIQE score); else it is written again.
    """
    import io

    import scipy.io

    raw = _niqe_npz()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else _own_cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"niqe_pris_params_{digest}.mat"
    params = np.load(io.BytesIO(raw))
    if not (path.is_file() and _holds(path, params)):
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".mat")
        os.close(fd)
        scipy.io.savemat(
            tmp,
            {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]},
        )
        os.replace(tmp, path)
    return path


_PYIQA_LOG_LOCK = threading.Lock()  # one save/raise/restore of pyiqa's log level at a time


@functools.lru_cache(maxsize=2)
def _niqe_metric(device: str) -> Any:
    """pyiqa's NIQE metric on ``device``, created without pyiqa's INFO lines.

    pyiqa logs "Network [NIQE] is created." and "Metric [NIQE] is created." at INFO through
    its own stderr handler, which prints them whenever the application logs at INFO (as ``sem``
    does). Its level is raised to WARNING for the creation only: warnings and errors still show.
    """
    import pyiqa

    log = logging.getLogger("pyiqa")  # the logger every pyiqa module writes to
    with _PYIQA_LOG_LOCK:
        level = log.level
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
        try:
            return pyiqa.create_metric(
                "niqe", pretrained_model_path=str(niqe_params_mat()), device=device
            )
        finally:
            log.setLevel(level)


def niqe(img: Any, data_range: float = 255.0, *, device: str | None = None) -> float:
    """NIQE no-reference quality (lower = more natural), pyiqa's implementation.

    Uses the pristine-model parameters shipped with this package (basicsr's, equal to the
    official MATLAB NIQE's), so nothing is downloaded. A grayscale (H, W) image is clipped to
    ``[0, data_range]`` and rescaled to 0..255 (NIQE's scale); an (H, W, 3) RGB image is
    converted to luminance by pyiqa (MATLAB's Y). Reference values: scikit-image's astronaut
    scores 3.06 (RGB) and about 10.1 with Gaussian noise of σ = 0.1 (on 0..1) — tested.
    A constant image (also one made constant by the clipping) is refused before pyiqa runs, as
    is one whose local statistics pyiqa cannot compute (:class:`MetrologyInputError`).

    Parameters
    ----------
    img : (H, W) or (H, W, 3) array on the ``0..data_range`` scale, H, W >= 96.
    device : torch device; default CUDA when available, else CPU.
    """
    a = _real_image(img, "img")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"niqe needs an (H, W) or (H, W, 3) image, got shape {a.shape}")
    if min(a.shape[:2]) < _NIQE_MIN_SIZE:
        raise ValueError(
            f"niqe needs images of at least {_NIQE_MIN_SIZE}x{_NIQE_MIN_SIZE} pixels "
            f"(it works on 96x96 blocks), got {a.shape[:2]}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("img must not contain NaN or inf")
    data_range = _data_range(data_range)
    for module in ("pyiqa", "torch"):  # one line naming the extra if absent (pyiqa first)
        require(module, _QUALITY_EXTRA, "niqe")
    scaled = np.clip(a / data_range, 0.0, 1.0)
    if scaled.max() == scaled.min():
        raise MetrologyInputError(_constant_niqe_message(a, scaled, data_range))
    import torch

    dev = device or _default_device()
    x = torch.from_numpy(scaled)
    x = x[None, None] if a.ndim == 2 else x.permute(2, 0, 1)[None]
    with torch.inference_mode():
        try:
            score = float(_niqe_metric(dev)(x.float().to(dev)).reshape(-1)[0].item())
        except torch.linalg.LinAlgError:
            score = float("nan")
    if not np.isfinite(score):
        raise MetrologyInputError(
            f"niqe cannot score this {a.shape[:2]} image: its local statistics are degenerate "
            "(e.g. every 96x96 block flat or varying along one axis only)"
        )
    return score


def _constant_niqe_message(a: np.ndarray, scaled: np.ndarray, data_range: float) -> str:
    """Why NIQE refuses an image without contrast (its statistics divide by local variance)."""
    if a.max() == a.min():
        what = f"img is constant (every pixel is {a.flat[0]:g})"
    else:
        what = (
            f"img is constant after clipping to [0, data_range={data_range:g}] (values "
            f"{a.min():g}..{a.max():g}, every pixel {scaled.flat[0] * data_range:g})"
        )
    return f"{what}: niqe needs an image with contrast (it normalises by local variance)"
