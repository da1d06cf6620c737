"""Line/space metrology of one image and its row of the paper's Table 4.

Per case, the focused reference and every method's output are measured at the same pixel size
and options, and compared column by column:

    CD(MAE)  = mean over images of |CD_method − CD_focused|
    Avg(MAE) = mean over the 5 × n entries |q_method − q_focused|, q ∈ TABLE_COLUMNS

The "PSD" column is what the paper reports (arXiv 2604.05960, Table 4: PSD ≥ LWR in every
entry): the LWR integrated from the width PSD with its noise, ``3 sqrt(Σ PSD_LWR Δf)``. The
noise-subtracted (unbiased) LWR, which is ≤ LWR by construction, is its own column.

A method's output is measured with the tone (which phase holds the lines) and orientation its
focused reference was measured with (:func:`measure_like_reference`): they are properties of
the sample, and the automatic tone rule (the bright phase carries more shot noise) holds for an
image as recorded, not for a restoration whose noise the method removed or reshaped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sem_metrology import TABLE_METRICS, LineMeasurement, LineOptions, measure_lines

from .results import MetrologyRow

__all__ = [
    "COLUMN_LABELS",
    "TABLE_COLUMNS",
    "lwr_from_psd",
    "measure_like_reference",
    "measure_line_image",
    "metrology_row",
]

#: The paper's Table 4 columns, averaged into Avg(MAE): sem-metrology's, so that
#: ``compare_measurements`` and these tables give one Avg(MAE).
TABLE_COLUMNS: tuple[str, ...] = TABLE_METRICS
COLUMN_LABELS = {
    "cd_nm": "CD (nm)",
    "cd_std_nm": "CD std (nm)",
    "lwr_nm": "LWR (nm)",
    "ler_nm": "LER (nm)",
    "lwr_psd_nm": "PSD: LWR from PSD, noise incl. (nm)",
    "lwr_unbiased_nm": "LWR unbiased (nm)",
}


def measure_line_image(
    image: np.ndarray, pixel_size_nm: float, options: LineOptions | None = None
) -> LineMeasurement:
    """Measure one image; an unmeasurable one gives ``valid=False`` with the reason, no raise.

    This is the evaluation's only call of :func:`sem_metrology.measure_lines`: the tables follow
    the paper's Table 4, measured with SMILE, so the measurement convention is chosen here
    (the ``smile`` convention, which reproduces SMILE3 step by step). A case's images are
    measured whole (``info_bar="none"`` unless the options say otherwise): a bar was cut when
    the image was read, and an output must not lose rows its reference keeps.
    """
    opts = options or LineOptions(convention="smile")
    if opts.info_bar == "auto":  # a case's images have no bar (cut when the image was read)
        opts = opts.model_copy(update={"info_bar": "none"})
    try:
        return measure_lines(image, pixel_size_nm, opts)
    except ValueError as err:
        return LineMeasurement(
            valid=False,
            reason=f"not measurable: {err}",
            pixel_size_nm=pixel_size_nm,
            pixel_size_source="given",
        )


def measure_like_reference(
    image: np.ndarray,
    pixel_size_nm: float,
    reference: LineMeasurement,
    options: LineOptions | None = None,
) -> LineMeasurement:
    """Measure a method's output of a case as its focused ``reference`` was measured.

    Same ``options``, with the reference's tone and orientation where they are ``"auto"``.
    Detected per image, the tone of a restoration is a guess: on the demo's line cases the
    automatic rule (the noisier phase is the bright one) called Wiener outputs inverted, and
    the widths of the spaces (pitch − CD) were scored as CDs.
    """
    opts = options or LineOptions(convention="smile")
    pinned = {
        field: getattr(reference, field)
        for field in ("tone", "orientation")
        if getattr(opts, field) == "auto" and getattr(reference, field) is not None
    }
    return measure_line_image(image, pixel_size_nm, opts.model_copy(update=pinned))


def lwr_from_psd(m: LineMeasurement) -> float | None:
    """``3 sqrt(∫ PSD_LWR df)`` (nm): the LWR the width PSD holds, its noise included
    (``m.lwr_psd_nm``, which sem-metrology fills in also for measurements saved before it)."""
    return m.lwr_psd_nm if m.valid else None


def _values(m: LineMeasurement) -> dict[str, float | None]:
    return {
        "cd_nm": m.cd_nm,
        "cd_std_nm": m.cd_std_nm,
        "lwr_nm": m.lwr_nm,
        "ler_nm": m.ler_nm,
        "lwr_psd_nm": lwr_from_psd(m),
        "lwr_unbiased_nm": m.lwr_unbiased_nm,
    }


def metrology_row(
    method: str,
    case_id: str,
    image: str,
    setting: str,
    m: LineMeasurement,
    reference: LineMeasurement | None,
) -> MetrologyRow:
    """The Table 4 row of measurement ``m``, with errors against ``reference`` (None: it is one).

    A measurement without one of the table columns is a failed row (✗), with the reason.
    """
    base: dict[str, Any] = {
        "method": method,
        "case_id": case_id,
        "image": image,
        "setting": setting,
    }
    if not m.valid:
        return MetrologyRow(**base, failed=m.reason or "not measurable")
    vals: dict[str, Any] = _values(m)
    missing = [c for c in TABLE_COLUMNS if vals[c] is None]
    if missing:
        return MetrologyRow(
            **base, n_lines=m.n_lines, **vals, failed=f"measured, but without {', '.join(missing)}"
        )
    row = MetrologyRow(**base, n_lines=m.n_lines, **vals)
    if reference is None:
        return row.model_copy(update={"cd_abs_error_nm": 0.0, "avg_abs_error_nm": 0.0})
    ref = _values(reference)
    errors = [abs(float(vals[c]) - float(ref[c])) for c in TABLE_COLUMNS]  # type: ignore[arg-type]
    return row.model_copy(
        update={"cd_abs_error_nm": errors[0], "avg_abs_error_nm": float(np.mean(errors))}
    )
