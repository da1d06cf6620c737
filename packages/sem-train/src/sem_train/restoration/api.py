"""``sem_train.restore(image, method=...)``: restore one micrograph with any registered method.

>>> import numpy as np
>>> from sem_physics import make_sample
>>> from sem_train import restore
>>> out = restore(make_sample("lines", (64, 64)), "wiener", psf="4,4,0,2")
>>> out.image.shape, out.method, out.psf.rx_px
((64, 64), 'wiener', 4.0)

A method is prepared once (:func:`prepare`: options validated, weights loaded) and then applied
to any number of images; :func:`restore` does both for one image.

Around the method (:mod:`.levels`): a dim picture is scaled up by a power of two for the method
(and its output scaled back), and the output's mean grey level is brought back to the
input's (``brightness="input"``, the default; ``"method"`` keeps the method's own).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sem_physics import PSFParams

from .chosen import chosen_values, unused_settings
from .levels import (
    BrightnessPolicy,
    apply_brightness,
    check_brightness,
    dim_note,
    held_note,
    input_scale,
)
from .methods import MethodNeeds, build_restorer, method_needs, reads_guides
from .psf import (
    PSF_AUTO,
    PSFSpec,
    estimate_degradation,
    estimate_record,
    parse_psf,
)
from .threads import using_fft_threads

__all__ = [
    "DEFAULT_METHOD",
    "MIN_SIDE_PX",
    "PreparedMethod",
    "RestoreTimings",
    "RestoredImage",
    "prepare",
    "restore",
    "validate_micrograph",
]

#: The best method that needs no training: Richardson-Lucy with the blind PSF estimate.
DEFAULT_METHOD = "richardson-lucy"
#: Smallest image side (px) worth restoring; smaller inputs are refused with a clear message.
MIN_SIDE_PX = 8


@dataclass(frozen=True)
class RestoreTimings:
    """Wall-clock seconds of one restoration (``jitter_s``: the scan-line jitter check)."""

    estimate_s: float = 0.0
    restore_s: float = 0.0
    load_s: float = 0.0
    jitter_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.estimate_s + self.restore_s + self.load_s + self.jitter_s


PSFSource = Literal["given", "blind", "paper"]
#: ``psf_source`` of a guided model's PSF, by the source its guides report (else "paper").
_GUIDE_SOURCES: dict[str, PSFSource] = {"given": "given", "estimated": "blind"}


@dataclass(frozen=True)
class RestoredImage:
    """A restored micrograph and how it was made.

    ``image`` is float32 (H, W) on the 0..255 scale, the shape of the input. ``parameters``
    are the restorer's validated settings (JSON-ready), with the values it chose or ran for
    this image under ``"per_image"`` (Wiener's balance, the iterations Richardson-Lucy ran and
    ``stopped_by``, the noise variance, BM3D's noise level, ...) and, where some settings did
    not apply (e.g. ``max_iterations`` when ``iterations`` fixes the count), their names under
    ``"not_used"``. ``psf`` is the PSF a deconvolution used, ``psf_source`` says
    whether it was ``"given"`` or estimated ``"blind"`` (``"paper"``: the paper's fixed PSF
    where a guided model's blind estimate failed) (then ``estimate`` holds the full
    :func:`sem_physics.estimate_degradation` result; with a given PSF the estimate a
    deconvolution made of the noise level alone is under ``per_image``); all three are None
    for other methods.
    A model with physics guides (``sem-foundation``) records the PSF its guides were made
    with in the same three fields. ``input_scale``: the power of two a dim picture was
    multiplied by for the method (1: none). ``brightness``: the policy, the input's and
    the method's mean grey level and the ``shift`` added. ``warnings``: the estimate's quality
    reasons when it flags itself as not reliable, scan-line jitter when
    :func:`sem_physics.row_jitter` detects it, and what was done to a dim picture.
    """

    image: np.ndarray
    method: str
    parameters: dict[str, Any]
    psf: PSFParams | None = None
    psf_source: PSFSource | None = None
    estimate: Any = None
    checkpoint: str | None = None
    timings: RestoreTimings = field(default_factory=RestoreTimings)
    warnings: tuple[str, ...] = ()
    input_scale: int = 1
    brightness: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-ready (what ``restore.json`` stores per image)."""
        return {
            "method": self.method,
            "parameters": self.parameters,
            "psf": None if self.psf is None else self.psf.model_dump(mode="json"),
            "psf_source": self.psf_source,
            "estimate": estimate_record(self.estimate),
            "checkpoint": self.checkpoint,
            "input_scale": self.input_scale,
            "brightness": self.brightness,
            "warnings": list(self.warnings),
            "timings_s": {
                "estimate": self.timings.estimate_s,
                "restore": self.timings.restore_s,
                "load": self.timings.load_s,
                "jitter": self.timings.jitter_s,
                "total": self.timings.total_s,
            },
        }


def validate_micrograph(image: Any, name: str = "image") -> np.ndarray:
    """``image`` as float32 (H, W), finite, at least ``MIN_SIDE_PX`` per side, or a ValueError.
    A picture on 0..1 is not warned about here: it is dim, and scaled for the method like any
    dim picture (:func:`.levels.input_scale`, with its own note)."""
    from sem_baselines import check_image
    from sem_physics.validation import UnitScaleWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitScaleWarning)
        arr = check_image(image, name)
    if min(arr.shape) < MIN_SIDE_PX:
        raise ValueError(
            f"{name} is {arr.shape[0]}x{arr.shape[1]} px; restoration needs at least "
            f"{MIN_SIDE_PX}x{MIN_SIDE_PX} px"
        )
    return arr


#: A flagged blind estimate whose larger radius is below this (px) finds (almost) no blur: on
#: in-focus micrographs (the real resist lines, corpus images) it reads 1.6-1.97 px, on the
#: same images blurred with R = 2 px 1.98-2.26 px.
IN_FOCUS_RADIUS_PX = 1.975


def _estimate_warnings(estimate: Any) -> tuple[str, ...]:
    """The quality reasons of a blind estimate that flags itself (``quality.ok`` False), and
    when it finds (almost) no blur, that a deconvolution then smooths the image: the
    discrepancy principle stops Richardson-Lucy after 1-2 iterations from its flat start
    (the in-focus resist lines: half their fine-detail power gone, Wiener's balance likewise)."""
    quality = getattr(estimate, "quality", None)
    if quality is None or getattr(quality, "ok", True):
        return ()
    reasons = [str(r) for r in getattr(quality, "reasons", [])]
    out = tuple(f"blind PSF estimate: {r}" for r in reasons) or ("blind PSF estimate flagged",)
    radius = max(getattr(estimate, "rx_px", None) or 0.0, getattr(estimate, "ry_px", None) or 0.0)
    if 0 < radius < IN_FOCUS_RADIUS_PX:
        out += (
            f"the image looks in focus (at most {radius:.1f} px of blur found): a deconvolution "
            "then smooths its noise rather than sharpening it; keep the input, or give the "
            "PSF if you know it (--psf, psf=)",
        )
    return out


def _jitter_warning(image: np.ndarray) -> tuple[str, ...]:
    """A warning when the rows are displaced at random (scan-line jitter), else nothing."""
    from sem_physics import row_jitter

    jitter = row_jitter(image)
    return (jitter.reason,) if jitter.detected and jitter.reason else ()


_NO_GUIDES = (
    "method {method!r} does not deconvolve (its model has no physics guides); it takes no --psf"
)


class RestoreWarning(UserWarning):
    """What :func:`restore` found worth knowing about an image it restored."""


def _issue(texts: tuple[str, ...]) -> None:
    """Each of ``texts`` as a :class:`RestoreWarning` pointing at the line that called the
    caller (:func:`restore` or a prepared method): the user's."""
    for text in texts:
        warnings.warn(text, RestoreWarning, stacklevel=3)


class PreparedMethod:
    """Method ``name`` ready to restore images: options validated, weights loaded once."""

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        *,
        psf: PSFSpec | str = PSF_AUTO,
        checkpoint: str | Path | None = None,
        brightness: BrightnessPolicy = "input",
        **options: Any,
    ) -> None:
        self.brightness: BrightnessPolicy = check_brightness(brightness)
        self.needs: MethodNeeds = method_needs(method)
        self.psf: PSFSpec = parse_psf(psf)
        self.options = dict(options)
        field = self.needs.checkpoint  # the config field holding the weights, if any
        if field in ("weights_path", "checkpoint_dir") and field in self.options:
            # the weights named as the method's own setting are loaded as ``checkpoint``
            given = self.options.pop(field)
            if checkpoint is not None:
                raise ValueError(f"{field}={given} and checkpoint={checkpoint}: give one")
            checkpoint = given
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        # under brightness "input" the method runs unclipped; the shifted output is clipped
        has_clip = "clip" in self.needs.config_cls.model_fields
        self._clip_after = has_clip and bool(self.options.get("clip", True))
        unclipped = has_clip and self.brightness == "input" and "clip" not in self.options
        self._run_options = {**self.options, "clip": False} if unclipped else dict(self.options)
        if not unclipped:
            self._clip_after = False  # the method clips (or not) itself
        if self.needs.true_psf and self.psf == PSF_AUTO:
            raise ValueError(
                f"method {method!r} restores each image with its true PSF (an evaluation's "
                "reference row): give that PSF with --psf RX,RY[,THETA[,BETA]]"
            )
        if self.needs.takes_psf:
            if "psf" in self.options:
                raise ValueError("give the PSF with --psf (psf=...), not as an option")
        elif psf != PSF_AUTO and not self.needs.learned:
            raise ValueError(f"method {method!r} does not deconvolve; it takes no --psf")
        elif self.psf != PSF_AUTO and reads_guides(self.needs, self.options, checkpoint) is False:
            raise ValueError(_NO_GUIDES.format(method=method))  # before the model loads
        t0 = time.perf_counter()
        self._restorer = None
        if not self.needs.takes_psf:
            self._restorer = build_restorer(self.needs, self._run_options, checkpoint)
            if self.psf != PSF_AUTO:  # a learned model: only one with physics guides takes it
                if not getattr(self._restorer, "guided", False):
                    raise ValueError(_NO_GUIDES.format(method=method))
                self._restorer.guide_psf = self.psf
        else:  # validate the options now; the PSF comes with each image
            build_restorer(self.needs, {**self._run_options, "psf": _placeholder_psf()}, checkpoint)
        self.load_s = time.perf_counter() - t0

    @property
    def method(self) -> str:
        return self.needs.name

    @property
    def caution(self) -> str | None:
        """What the method's class says a user restoring their images with it should know."""
        from sem_baselines import registry_entry

        return getattr(registry_entry(self.method).cls, "caution", None)

    def weights_record(self) -> dict[str, str] | None:
        """The weights file the method loaded and its sha256 (None: a method without one)."""
        from sem_physics.cli_support import path_text
        from sem_physics.protocol import file_sha256

        from .methods import weights_file

        path = weights_file(self.needs, self.options, self.checkpoint)
        if path is None or not path.is_file():
            return None
        return {"path": path_text(path), "sha256": file_sha256(path)}

    @property
    def model_notes(self) -> list[str]:
        """What the loaded model says of itself: the restorer's ``notes`` (e.g. that a given
        checkpoint is dense, no Mixture-of-Experts: not the paper's MAE + MoE). The note that
        merely names the shipped model a method loads when no checkpoint is given is left
        out (the method's name says it); empty for a method without a model."""
        notes = [str(n) for n in getattr(self._restorer, "notes", None) or []]
        if self.checkpoint is None:
            notes = [n for n in notes if not n.endswith("model shipped with sem-models")]
        return list(dict.fromkeys(notes))

    def __call__(self, image: Any) -> RestoredImage:
        """Restore ``image`` (float (H, W), 0..255, info bar already removed); its FFTs (blind
        estimate, deconvolution, guides) use every core allowed (:mod:`.threads`)."""
        out = self._run(image)
        _issue(out.warnings)
        return out

    def _run(self, image: Any) -> RestoredImage:
        with using_fft_threads():
            return self._restore(image)

    def _restore(self, image: Any) -> RestoredImage:
        arr = validate_micrograph(image)
        estimate, psf_used = None, None
        source: PSFSource | None = None
        scale, level = input_scale(arr)
        notes: tuple[str, ...] = (dim_note(level, scale),) if scale != 1 else ()
        held = held_note(level, scale, float(np.max(arr)))
        notes += (held,) if held is not None else ()
        x = arr * np.float32(scale) if scale != 1 else arr  # exact: a power of two
        t0 = time.perf_counter()
        restorer = self._restorer
        if self.needs.takes_psf:
            settings: dict[str, Any] = {}
            if self.psf == PSF_AUTO and self.options.get("preset") == "paper":
                from sem_baselines.classical.deconv import DEFAULT_PSF

                psf_used, source = DEFAULT_PSF, "paper"  # the paper's fixed PSF, no estimate
            elif self.psf == PSF_AUTO:
                estimate = estimate_degradation(x)
                psf_used, source = estimate.psf_params(), "blind"
                if "noise_var" in self.needs.config_cls.model_fields:
                    # the same estimate sets the regularisation: one estimate per image
                    settings["noise_var"] = estimate.noise_floor
            else:
                psf_used, source = self.psf, "given"
            settings = {**settings, **self._run_options, "psf": psf_used}
            restorer = build_restorer(self.needs, settings)
        assert restorer is not None  # built in __init__ unless the PSF comes with each image
        t1 = time.perf_counter()
        out = np.asarray(restorer.restore(x), dtype=np.float32)
        if scale != 1:
            out = out / np.float32(scale)
        t2 = time.perf_counter()
        # an estimate the method made itself (noise level of a given PSF, a guided model's
        # guides) is timed as estimate, not restore
        inner = float(getattr(restorer, "last_estimate_s", 0.0))
        t1 += min(inner, t2 - t1)
        warned = estimate  # the estimate whose flags are warnings: the one the PSF came from
        guides = getattr(restorer, "last_choice", None) if not self.needs.takes_psf else None
        if guides is not None:  # a model with physics guides: the PSF they were made with
            psf_used, estimate = guides.psf, guides.estimate
            source = _GUIDE_SOURCES.get(guides.source, "paper")
            warned = estimate if source == "blind" else None  # a given PSF: only noise from it
            if source == "paper":
                notes += (f"physics guides made with the paper's fixed PSF: {guides.source}",)
        notes += _noise_note(restorer, guides)
        if out.shape != arr.shape or not np.all(np.isfinite(out)):
            raise RuntimeError(
                f"method {self.method!r} returned an invalid image (shape {out.shape}, "
                f"finite: {bool(np.all(np.isfinite(out)))})"
            )
        out, brightness = apply_brightness(out, arr, self.brightness, self._clip_after)
        params = restorer.config.model_dump(mode="json")
        chosen = chosen_values(restorer)
        if estimate is not None:  # recorded once, below; else the one the method made itself
            chosen.pop("estimate", None)
        if chosen:
            params["per_image"] = chosen
        unused = unused_settings(restorer)
        if unused:
            params["not_used"] = unused
        t3 = time.perf_counter()
        jitter = _jitter_warning(arr)
        jitter_s = time.perf_counter() - t3
        return RestoredImage(
            image=out,
            method=self.method,
            parameters=params,
            psf=psf_used,
            psf_source=source,
            estimate=estimate,
            checkpoint=self.checkpoint,
            timings=RestoreTimings(estimate_s=t1 - t0, restore_s=t2 - t1, jitter_s=jitter_s),
            warnings=_estimate_warnings(warned) + jitter + notes,
            input_scale=scale,
            brightness=brightness,
        )


def _noise_note(restorer: Any, guides: Any) -> tuple[str, ...]:
    """The deconvolution's note when the noise level it needed could not be estimated and the
    floor was used (a picture under 32 px a side with a given PSF). A guided model's guides
    take fixed balances, no noise level: nothing to say (nor a ``noise_var`` it would refuse)."""
    if guides is not None:
        return ()
    params = getattr(restorer, "last_params", None)
    note = params.get("noise_note") if isinstance(params, dict) else None
    return (note,) if note else ()


def _placeholder_psf() -> PSFParams:
    return PSFParams(rx_px=1.0, ry_px=1.0)


def prepare(
    method: str = DEFAULT_METHOD,
    *,
    psf: PSFSpec | str = PSF_AUTO,
    checkpoint: str | Path | None = None,
    brightness: BrightnessPolicy = "input",
    **options: Any,
) -> PreparedMethod:
    """Validate ``method`` and its options and load its weights, once for many images."""
    return PreparedMethod(method, psf=psf, checkpoint=checkpoint, brightness=brightness, **options)


def restore(
    image: Any,
    method: str = DEFAULT_METHOD,
    *,
    psf: PSFSpec | str = PSF_AUTO,
    checkpoint: str | Path | None = None,
    brightness: BrightnessPolicy = "input",
    **options: Any,
) -> RestoredImage:
    """Restore one micrograph (float (H, W), 0..255, without its info bar) with ``method``.

    ``psf``: ``"auto"`` (blind estimate, the default) or a :class:`sem_physics.PSFParams` /
    ``"RX,RY,THETA,BETA"`` for the deconvolution methods. ``checkpoint``: weights of a learned
    method (a ``sem train`` run folder, a saved restorer folder or a weights file; or given as
    the method's own ``checkpoint_dir=`` / ``weights_path=`` option).
    ``brightness``: ``"input"`` (default) shifts the output's mean grey level to the input's
    (a deconvolution preserves it; a learned model may have learned a simulator's offset);
    ``"method"`` keeps what the method returned (the paper's protocol).
    ``options``: the method's registry config fields (e.g. ``iterations=50``). The load time
    of the weights is included in ``timings.load_s``. Each of the result's ``warnings`` is also
    issued as a :class:`RestoreWarning` (a flagged blind PSF estimate, scan-line jitter, an
    image that looks in focus), so that a notebook shows it and ``warnings`` filters apply; so
    does calling a :func:`prepare`-d method. So is what the loaded model says of itself (e.g.
    that a checkpoint is dense, no Mixture-of-Experts; a prepared method's ``model_notes``).
    """
    prepared = prepare(method, psf=psf, checkpoint=checkpoint, brightness=brightness, **options)
    out = prepared._run(image)
    _issue((*(f"{method}: {n}" for n in prepared.model_notes), *out.warnings))
    t = out.timings
    timings = RestoreTimings(
        estimate_s=t.estimate_s, restore_s=t.restore_s, load_s=prepared.load_s, jitter_s=t.jitter_s
    )
    return RestoredImage(**{**out.__dict__, "timings": timings})
