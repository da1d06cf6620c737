"""Whether an evaluated image is a training image in another form (:mod:`.seen`).

A training image saved again in another format or bit depth (an 8-bit PNG of a 16-bit TIFF),
rescaled by an integer factor, or cropped (``sem-degrade`` removing the info bar, a cut-out)
has other bytes but the same picture. Files are read as every command reads them
(:func:`sem_physics.io.read_image`, the detected info bar removed); an evaluated image E
without a detected bar leaves its bottom :data:`TRIM_FRACTION` out (an undetected bar is no
part of a training image T).

Two steps, so that another micrograph of the same field (another detector, another
magnification) is not taken for a copy:

1. *Search*, on each file's signature (its block means, long side at most
   :data:`BASE_SIDE_PX`, cached): under each relative scale of :data:`SCALES` (E is T
   magnified or reduced by it) both are block-averaged to one grid, E as coarse as leaves it
   :data:`TEMPLATE_PX` px on its short side, lightly smoothed, and E is slid over T by
   normalised cross-correlation (zero mean, unit variance per window, via FFT). Places that
   score :data:`SEARCH_MIN` or more are candidates.
2. *Check*, at full resolution (E or T block-averaged by the scale only): the normalised
   cross-correlation of the fine detail (each picture less its blur of :data:`DETAIL_SIGMA`)
   of E's central :data:`CHECK_PX` square, a few search steps around each candidate place.
   A copy shares the pixels, noise included, and scores near 1; another acquisition shares
   the scene, not its noise. E matches T at :data:`MATCH_THRESHOLD` or more (measured on the
   48 real micrographs of the ``sem`` and ``sem_corpus`` folders: the README's benchmark
   section gives the margin).

A dense periodic pattern (resist lines, combs) averaged on the search grid can leave no
recognisable place: a cut-out of it is then not found.

Signatures are kept per process and in ``$XDG_CACHE_HOME/sem-train/likeness`` (keyed by a
file's path, size and modification time, as ``data_split.json``'s fingerprints), so a second
benchmark reads only the candidates' files again. The folder is kept under
:data:`CACHE_MAX_BYTES`: each write drops the least recently used signatures beyond it (a
rewritten file leaves its old signature behind). No torch.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import gaussian_filter

__all__ = ["MATCH_THRESHOLD", "Likeness", "Signature", "signature"]

#: Long side (px) of a signature at most: a 2048-px image is kept at 256 px (factor 8).
BASE_SIDE_PX = 256
#: Short side (px) of E on the search grid, at least (when E has that many pixels).
TEMPLATE_PX = 32
#: Relative scales tried: E is T magnified (k) or reduced (1/k) by each (other than 1: a
#: picture covering at least WHOLE_SHARE of T, a rescaled copy rather than a cut-out).
SCALES = (1, 2, 3, 4)
WHOLE_SHARE = 0.5
#: How much E (on T's grid) may exceed T, its part beyond T left out: by BAR_SHARE of T's
#: height (an info bar detected lower in a rescaled copy) and SLACK_PX px (rounding).
BAR_SHARE = 0.25
SLACK_PX = 8
#: Bottom share of E left out when it shows no info bar.
TRIM_FRACTION = 0.15
#: Search score from which a place is checked at full resolution.
SEARCH_MIN = 0.8
#: Side (px) of E's central square compared at full resolution, at most.
CHECK_PX = 256
#: Search-grid steps around the search's place that the check looks at.
CHECK_STEPS = 3
#: Blur (px) whose residual is the detail the check compares.
DETAIL_SIGMA = 1.0
#: Taken off the check's score of a reduced E: averaging its pixels averages their noise, so
#: a reduced other acquisition of the same field (another detector) scores up to 0.78 there.
REDUCED_PENALTY = 0.05
#: Full-resolution score from which E counts as T in another form.
MATCH_THRESHOLD = 0.8
#: Signature format: a cached signature of another version is computed again.
_VERSION = 1
#: Size (bytes) of the signature cache folder at most (about 2 500 images of 2048 px).
CACHE_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Signature:
    """A file's picture as block means: ``base`` at ``factor`` full-resolution pixels per side;
    ``shape`` the full frame (info bar removed), ``trim`` its bottom rows left out as E."""

    path: str
    base: np.ndarray
    factor: int
    shape: tuple[int, int]
    trim: int


def _blocks(a: np.ndarray, f: int) -> np.ndarray:
    """Means over ``f`` x ``f`` blocks (the remainder rows and columns dropped)."""
    if f == 1:
        return a
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float64)


def _read(path: str) -> tuple[np.ndarray, int]:
    """Full-resolution picture (float32, info bar removed) and the rows to trim as E."""
    from sem_physics.io import crop_info_bar, read_image

    img = read_image(path, log_notes=False)
    data = crop_info_bar(img.data, rows=img.info_bar_rows or 0).astype(np.float32)
    return data, 0 if img.info_bar_rows else round(TRIM_FRACTION * data.shape[0])


def _cache_file(key: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "sem-train" / "likeness" / f"{key}.npz"


def _prune(folder: Path, limit: int) -> None:
    """Remove the least recently used signatures (oldest modification time: a hit touches its
    file) until the folder's ``.npz`` files take at most ``limit`` bytes."""
    entries = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.endswith(".npz") and ".tmp." not in e.name:
                try:
                    st = e.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, e.path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        try:
            os.remove(path)
        except OSError:
            continue  # removed by another process meanwhile, or not ours to remove
        total -= size


_MEMORY: dict[str, Signature] = {}


def signature(path: str | Path) -> Signature | None:
    """The signature of the image file ``path``; None when it cannot be read (skipped, as an
    unreadable file is everywhere)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    key = hashlib.sha256(f"{_VERSION}|{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    if key in _MEMORY:
        return _MEMORY[key]
    cache = _cache_file(key[:32])
    try:
        with np.load(cache) as z:
            sig = Signature(
                real,
                z["base"].astype(np.float32),
                int(z["factor"]),
                tuple(z["shape"]),
                int(z["trim"]),
            )
        try:
            os.utime(cache)  # recently used: the last to be pruned
        except OSError:
            pass
    except (OSError, ValueError, KeyError):
        try:
            data, trim = _read(real)
        except (ValueError, OSError):
            return None
        factor = max(1, math.ceil(max(data.shape) / BASE_SIDE_PX))
        base = _blocks(data, factor).astype(np.float32)
        sig = Signature(real, base, factor, data.shape, trim)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, base=base.astype(np.float16), factor=factor, shape=data.shape, trim=trim)
            os.replace(tmp, cache)
            _prune(cache.parent, CACHE_MAX_BYTES)
        except OSError:
            pass  # a read-only cache folder: computed again next time
    _MEMORY[key] = sig
    return sig


class _Area:
    """A picture to search in, with what every search in it shares: its integral images (sums
    over any window) and its FFTs."""

    def __init__(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float64)
        self.a = a - a.mean()
        self.c1, self.c2 = _integral(self.a), _integral(self.a * self.a)
        self._fft: dict[tuple[int, int], np.ndarray] = {}

    def fft(self, shape: tuple[int, int]) -> np.ndarray:
        if shape not in self._fft:
            self._fft[shape] = sfft.rfft2(self.a, shape)
        return self._fft[shape]


def _integral(a: np.ndarray) -> np.ndarray:
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    c[1:, 1:] = a.cumsum(0).cumsum(1)
    return c


def _window(c: np.ndarray, h: int, w: int) -> np.ndarray:
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def _detail(a: np.ndarray) -> np.ndarray:
    """The fine detail of ``a`` (noise included): ``a`` less its Gaussian blur of DETAIL_SIGMA."""
    return a - gaussian_filter(a, DETAIL_SIGMA)


def _ncc(area: _Area, tpl: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``tpl`` at every place it fits in ``area`` (0 where the
    window is flat); empty when it does not fit."""
    big_h, big_w = area.a.shape
    tpl = np.asarray(tpl[:big_h, :big_w], np.float64)
    h, w = tpl.shape
    t0 = tpl - tpl.mean()
    norm = math.sqrt(float((t0 * t0).sum()))
    if h > big_h or w > big_w or h * w < 4 or norm == 0.0:
        return np.zeros((0, 0))
    shape = (sfft.next_fast_len(big_h, real=True), sfft.next_fast_len(big_w, real=True))
    num = sfft.irfft2(area.fft(shape) * np.conj(sfft.rfft2(t0, shape)), shape)
    num = num[: big_h - h + 1, : big_w - w + 1]
    s1, s2 = _window(area.c1, h, w), _window(area.c2, h, w)
    var = np.maximum(s2 - s1 * s1 / (h * w), 0.0)
    floor = 1e-6 * float(var.max(initial=0.0))
    return num / (np.sqrt(np.where(var > floor, var, np.inf)) * norm)


def _ratios() -> list[tuple[int, int]]:
    """(p, q): E is T magnified by p / q."""
    return [(1, 1)] + [(k, 1) for k in SCALES if k > 1] + [(1, k) for k in SCALES if k > 1]


@dataclass
class Likeness:
    """Compares evaluated images with training images; what the comparisons share (search
    grids, full-resolution pictures read for the check) is kept for the comparer's life (one
    ``seen_images`` call)."""

    _full: dict[str, tuple[np.ndarray, int] | None] = field(default_factory=dict)
    _areas: dict[tuple[str, int], _Area] = field(default_factory=dict)
    _templates: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def _picture(self, path: str) -> tuple[np.ndarray, int] | None:
        if path not in self._full:
            try:
                self._full[path] = _read(path)
            except (ValueError, OSError):
                self._full[path] = None
        return self._full[path]

    def _area(self, t: Signature, f: int) -> _Area:
        """T's search grid at ``f`` full-resolution pixels per side, smoothed."""
        key = (t.path, f)
        if key not in self._areas:
            self._areas[key] = _Area(gaussian_filter(_blocks(t.base, f // t.factor), 1.0))
        return self._areas[key]

    def _template(self, e: Signature, f: int) -> np.ndarray:
        """E's search template at ``f`` full-resolution pixels per side, trimmed, smoothed."""
        key = (e.path, f)
        if key not in self._templates:
            tpl = _blocks(e.base, f // e.factor)
            tpl = tpl[: max(1, tpl.shape[0] - math.ceil(e.trim / f))]
            self._templates[key] = gaussian_filter(tpl, 1.0)
        return self._templates[key]

    def score(self, e: Signature, t: Signature) -> float:
        """How well ``e`` is ``t`` in another form: the best full-resolution normalised
        cross-correlation at the search's candidate places (0 without a candidate)."""
        best = 0.0
        for _, p, q, y, x in self._candidates(e, t):
            best = max(best, self._check(e, t, p, q, y, x) - (REDUCED_PENALTY if q > 1 else 0.0))
            if best >= MATCH_THRESHOLD:
                break
        return best

    def _candidates(self, e: Signature, t: Signature) -> list[tuple[float, int, int, int, int]]:
        """(search score, p, q, row and column of E's top left in T's full-resolution pixels)
        of every scale whose best search place scores SEARCH_MIN or more, best first."""
        found = []
        (e_h, e_w), (t_h, t_w) = e.shape, t.shape
        for p, q in _ratios():
            h, w = (e_h - e.trim) * q / p, e_w * q / p  # E on T's grid
            if h > t_h * (1 + BAR_SHARE) + SLACK_PX or w > t_w + SLACK_PX:
                continue  # E at this scale is larger than T (more than by an info bar)
            if (p, q) != (1, 1) and h * w < WHOLE_SHARE * t_h * t_w:
                continue  # rescaled copies are of whole pictures, not of cut-outs
            step_e = e.factor // math.gcd(e.factor, p)
            step_t = t.factor // math.gcd(t.factor, q)
            unit = step_e * step_t // math.gcd(step_e, step_t)
            m = unit * max(1, min(e_h - e.trim, e_w) // (p * TEMPLATE_PX * unit))
            fe, ft = p * m, q * m
            scores = _ncc(self._area(t, ft), self._template(e, fe))
            if scores.size and scores.max() >= SEARCH_MIN:
                y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
                found.append((float(scores.max()), p, q, int(y) * ft, int(x) * ft))
        return sorted(found, reverse=True)

    def _check(self, e: Signature, t: Signature, p: int, q: int, y: int, x: int) -> float:
        """The best full-resolution score of E's central :data:`CHECK_PX` square (on T's grid)
        within the search grid's step of the candidate place."""
        pe, pt = self._picture(e.path), self._picture(t.path)
        if pe is None or pt is None:
            return 0.0
        tpl = _blocks(pe[0][: pe[0].shape[0] - pe[1]], p)
        cy, cx = max(0, (tpl.shape[0] - CHECK_PX) // 2), max(0, (tpl.shape[1] - CHECK_PX) // 2)
        tpl = tpl[cy : cy + CHECK_PX, cx : cx + CHECK_PX][
            : pt[0].shape[0] // q, : pt[0].shape[1] // q
        ]
        # a few search-grid steps: the search's best place may be a period off on a pattern
        r = CHECK_STEPS * (math.ceil(max(e.factor, t.factor) * max(p, q) / q) + 1)
        y0, x0 = max(0, (y // q) + cy - r), max(0, (x // q) + cx - r)
        region = _blocks(pt[0], q)[y0 : y0 + tpl.shape[0] + 2 * r, x0 : x0 + tpl.shape[1] + 2 * r]
        scores = _ncc(_Area(_detail(region)), _detail(tpl))
        return float(scores.max()) if scores.size else 0.0
