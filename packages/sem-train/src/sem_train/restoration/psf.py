"""The PSF a classical restorer deconvolves with: given by the user, or estimated blind.

``--psf RX,RY,THETA,BETA`` gives the elliptical Airy PSF of the forward model (arXiv 2604.05960,
Sec. 3.1: radii in px, angle in rad, Airy exponent); ``--psf auto`` estimates it from the image
itself with :func:`sem_physics.estimate_degradation`. That estimator is called through
:func:`estimate_degradation` below and nowhere else, so its contract lives in one place: it
returns an object with ``rx_px``, ``ry_px``, ``theta_rad``, ``beta``, ``sigma``, ``dose``, their
uncertainties, quality flags, and ``psf_params() -> sem_physics.PSFParams``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final, Literal

import numpy as np
import sem_physics
from pydantic import ValidationError
from sem_physics import PSFParams
from sem_physics.cli_support import first_line, validation_message

__all__ = [
    "PSF_AUTO",
    "PSFSpec",
    "estimate_degradation",
    "estimate_record",
    "jsonable",
    "parse_psf",
]

PSF_AUTO: Final = "auto"
#: What ``--psf`` / ``psf=`` accepts: "auto" (blind estimate) or explicit parameters.
PSFSpec = PSFParams | Literal["auto"]


def parse_psf(text: str | PSFParams) -> PSFSpec:
    """``"auto"`` or ``"RX,RY,THETA,BETA"`` (px, px, rad, exponent) -> a PSF spec.

    THETA and BETA may be left out (0 rad and 2, the Airy intensity pattern).
    """
    if isinstance(text, PSFParams):
        return text
    text = str(text).strip()
    if text.lower() == PSF_AUTO:
        return PSF_AUTO
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 2 <= len(values) <= 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"--psf {text!r}: expected 'auto' or RX,RY[,THETA[,BETA]] "
            "(radii in px > 0, angle in rad, Airy exponent in (0, 10]), e.g. 15.5,15.5,0,1.95"
        )
    names = ("rx_px", "ry_px", "theta_rad", "beta")
    try:
        return PSFParams(**dict(zip(names, values, strict=False)))
    except ValidationError as err:  # e.g. "rx_px must be in (0, 1000], got -5"
        raise ValueError(f"--psf {text!r}: {validation_message(err, PSFParams)}") from None


def estimate_degradation(image: np.ndarray) -> Any:
    """The blind estimate of the defocus PSF and noise of ``image`` (0..255, info bar removed).

    Raises a ValueError saying what to do when the estimate fails: give the PSF (``--psf``), or,
    for a uniform image, which no PSF changes, check the file (there is nothing to restore).
    """
    try:
        estimate = sem_physics.estimate_degradation(image)
        estimate.psf_params()
    except Exception as err:  # the estimator's own failures, said in one line
        flat = np.asarray(image)
        if flat.size and np.ptp(flat) == 0:  # a blank frame: --psf would not help
            from sem_baselines.classical.deconv import UNIFORM_IMAGE_NOTE

            # no value: a dim picture is estimated scaled up
            raise ValueError(UNIFORM_IMAGE_NOTE) from err
        raise ValueError(
            f"blind PSF estimate failed ({first_line(err)}); give the PSF as --psf RX,RY,THETA,BETA"
        ) from err
    return estimate


def estimate_record(estimate: Any) -> dict[str, Any] | None:
    """A JSON-ready dict of a blind estimate (pydantic model, dataclass or plain object)."""
    if estimate is None:
        return None
    if isinstance(estimate, dict):  # already a record (a restorer's ``last_params``)
        return jsonable(estimate)
    if hasattr(estimate, "model_dump"):
        return estimate.model_dump(mode="json")
    if dataclasses.is_dataclass(estimate) and not isinstance(estimate, type):
        return jsonable(dataclasses.asdict(estimate))
    return jsonable({k: v for k, v in vars(estimate).items() if not k.startswith("_")})


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, pydantic models and other objects made JSON-ready."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
