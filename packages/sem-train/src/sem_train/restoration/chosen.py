"""What a restorer chose for one image, as ``restore.json`` records it.

Restorers keep what they chose for the last image in ``last_*`` attributes: scalars (BM3D's
``last_sigma``) and the deconvolutions' ``last_params`` dict (Wiener's ``balance``, the
iterations Richardson-Lucy ran and what stopped them, the noise variance, the PSF and its
source, the estimate made for them). :func:`chosen_values` flattens them into one JSON-ready
dict; :func:`unused_settings` names the settings of the config that did not apply.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .psf import jsonable

__all__ = ["chosen_values", "unused_settings"]

# the record's own ``psf`` and ``psf_source`` say which PSF was used and where it came from
_RECORDED_ABOVE = ("psf", "psf_source")
_PLAIN = (str, int, float, bool, type(None), dict, list, tuple, np.generic)


def chosen_values(restorer: Any) -> dict[str, Any]:
    """The values ``restorer`` chose for the last image, JSON-ready.

    ``last_params`` is merged in; other ``last_*`` attributes keep their name without the
    prefix. Objects that are not data (e.g. ``last_choice``, which repeats ``last_params``) are
    left out, and so are the PSF and its source (the record states them once). Settings a
    deconvolution did not use (:func:`unused_settings`) are dropped.
    """
    out: dict[str, Any] = {}
    for key, value in vars(restorer).items():
        if not key.startswith("last_") or not isinstance(value, _PLAIN):
            continue
        if key == "last_params" and isinstance(value, dict):
            out.update(value)
        else:
            out[key.removeprefix("last_")] = value
    for name in _RECORDED_ABOVE:
        out.pop(name, None)
    for name in unused_settings(restorer):
        out.pop(name, None)  # a placeholder, e.g. noise_var 0.0 where no noise level was needed
    return jsonable(out)


def unused_settings(restorer: Any) -> list[str]:
    """Settings of a deconvolution's config that did not apply: with a fixed strength (the
    paper's preset, or ``iterations``/``balance`` given) the discrepancy principle is not used,
    so neither are ``tau``, ``noise_var`` nor Richardson-Lucy's ``max_iterations``; the
    paper's preset (scikit-image's plain Richardson-Lucy) does not use ``accelerate``."""
    strength = getattr(restorer, "strength_field", None)
    config = getattr(restorer, "config", None)
    if strength is None or config is None:
        return []
    fields = type(config).model_fields
    # The paper's preset is scikit-image's plain Richardson-Lucy: no acceleration.
    paper_only = ["accelerate"] if config.preset == "paper" and "accelerate" in fields else []
    if config.preset != "paper" and getattr(config, strength) is None:
        return []  # the discrepancy principle chose the strength: every setting applied
    return [name for name in ("max_iterations", "noise_var", "tau") if name in fields] + paper_only
