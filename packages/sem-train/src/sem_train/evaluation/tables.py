"""The paper's tables from typed rows: summaries per method and their markdown.

* Quality (Tables 2/3): mean ± std over cases per metric; the control row and the
  affine-matched PSNR beside the paper's PSNR; the report says which methods do not beat the
  control.
* Metrology (Table 4): mean ± std per column, per-image columns (I1, I2, ...), CD(MAE) and
  Avg(MAE). As in the paper, a method is ✗ in both summary columns as soon as one image could
  not be measured; bold marks the best among complete rows only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from .metrology import COLUMN_LABELS, TABLE_COLUMNS
from .quality import HIGHER_IS_BETTER, METRIC_LABELS, PSNR_CAP_DB
from .results import (
    CONTROL_NAME,
    FAILED,
    INPUT_NAME,
    REFERENCE_NAME,
    MethodResult,
    MetricSummary,
    MetrologyRow,
    QualityRow,
    summarise,
)

__all__ = [
    "NIQE_CAVEAT",
    "MetrologySummary",
    "QualitySummary",
    "marked",
    "metrology_markdown",
    "metrology_per_image_markdown",
    "metrology_summary",
    "noise_ceiling_note",
    "quality_markdown",
    "quality_summary",
    "readme_table",
]

QUALITY_DIGITS = {"psnr": 2, "psnr_affine": 2, "ssim": 3, "lpips": 3, "niqe": 2}
_UNRANKED = {REFERENCE_NAME, CONTROL_NAME}
_PER_IMAGE_COLUMNS = 4  # up to this many line images: the paper's I1/I2 layout, else one row each

NIQE_CAVEAT = (
    "NIQE measures how far an image's local statistics are from those of pristine natural "
    "photographs; it has no reference. On SEM images it rewards smooth, noise-free regions and "
    "penalises shot noise and sharp secondary-electron edges, so a ringing or over-smoothed "
    "output can score better than the focused micrograph. Read it as secondary."
)


class QualitySummary(BaseModel):
    """One method's quality over the cases (of one setting when summarised per setting)."""

    method: str
    n_cases: int
    n_failed: int
    reason: str | None = None
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict, description="metric -> first reason")
    n_infinite_psnr: int = 0
    noise_ceiling_db: list[float] = Field(
        default_factory=list, description="per case; the focused reference's rows only"
    )

    def complete(self, metric: str) -> bool:
        """Every case has a value of ``metric``."""
        return self.n_cases > 0 and self.metrics[metric].n == self.n_cases


class MetrologySummary(BaseModel):
    """One method's Table 4 row: column means over its measured images, CD(MAE), Avg(MAE).

    ``cd_mae_nm`` and ``avg_mae_nm`` are None (✗) unless every image was measured.
    """

    method: str
    n_images: int
    n_measured: int
    reason: str | None = None
    columns: dict[str, MetricSummary] = Field(default_factory=dict)
    cd_mae_nm: float | None = None
    avg_mae_nm: float | None = None

    @property
    def complete(self) -> bool:
        return self.n_images > 0 and self.n_measured == self.n_images


def failure_reasons(reasons: Sequence[str | None], most: int = 3) -> str | None:
    """The distinct reasons of several failures, in order of first appearance, each with its
    count when the failures differ (``"no lines found (2) / output not finite (1)"``), at most
    ``most`` of them and how many others; None when nothing failed."""
    counts = Counter(r or "no reason recorded" for r in reasons)
    if not counts:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    parts = [f"{why} ({n})" for why, n in list(counts.items())[:most]]
    if len(counts) > most:
        others = len(counts) - most
        parts.append(f"{others} other reason{'s' if others > 1 else ''}")
    return " / ".join(parts)


def quality_summary(
    rows: Sequence[QualityRow], method: str, metrics: Sequence[str], setting: str | None = None
) -> QualitySummary:
    """Mean ± std of every metric of ``method`` over its cases (of ``setting`` when given)."""
    mine = [r for r in rows if r.method == method and (setting is None or r.setting == setting)]
    failed = [r for r in mine if r.failed]
    ok = [r for r in mine if not r.failed]
    errors: dict[str, str] = {}
    for r in ok:
        for k, why in r.errors.items():
            errors.setdefault(k, why)
    return QualitySummary(
        method=method,
        n_cases=len(mine),
        n_failed=len(failed),
        reason=failure_reasons([r.failed for r in failed]),
        metrics={k: summarise(r.value(k) for r in ok) for k in metrics},
        errors=errors,
        n_infinite_psnr=sum(r.psnr_infinite for r in ok),
        noise_ceiling_db=[r.noise_ceiling_db for r in ok if r.noise_ceiling_db is not None],
    )


def metrology_summary(rows: Sequence[MetrologyRow], method: str) -> MetrologySummary:
    """The Table 4 row of ``method`` (✗ summary columns as soon as one image failed)."""
    mine = [r for r in rows if r.method == method]
    ok = [r for r in mine if r.failed is None]
    bad = [r for r in mine if r.failed is not None]
    complete = bool(mine) and not bad
    return MetrologySummary(
        method=method,
        n_images=len(mine),
        n_measured=len(ok),
        reason=failure_reasons([r.failed for r in bad]),
        columns={c: summarise(r.value(c) for r in ok) for c in (*TABLE_COLUMNS, "lwr_unbiased_nm")},
        cd_mae_nm=summarise(r.cd_abs_error_nm for r in ok).mean if complete else None,
        avg_mae_nm=summarise(r.avg_abs_error_nm for r in ok).mean if complete else None,
    )


def _fmt(s: MetricSummary, digits: int) -> str:
    if s.mean is None:
        return "n/a"
    return f"{s.mean:.{digits}f}" if s.std is None else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def _best(values: dict[str, float], higher: bool) -> float | None:
    if not values:
        return None
    return max(values.values()) if higher else min(values.values())


def marked(method: str, marks: Mapping[str, str] | None) -> str:
    """``method`` with its mark (``"sem-foundation †"``), as every table names a marked row."""
    return f"{method} {marks[method]}" if marks and method in marks else method


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _niqe_reference_last(summaries: Sequence[QualitySummary]) -> bool:
    ref = next((s for s in summaries if s.method == REFERENCE_NAME), None)
    if ref is None or "niqe" not in ref.metrics or ref.metrics["niqe"].mean is None:
        return False
    means = [s.metrics["niqe"].mean for s in summaries if s.method not in _UNRANKED]
    others = [v for v in means if v is not None]
    return bool(others) and ref.metrics["niqe"].mean > max(others)


def quality_markdown(
    summaries: Sequence[QualitySummary],
    metrics: Sequence[str],
    marks: Mapping[str, str] | None = None,
) -> str:
    """Table 2/3 layout: one row per method, mean ± std per metric, notes beneath; ``marks``:
    method -> a mark after its name (explained where the table is shown).

    Bold: the best mean of a column among the methods with a value on every case (not the
    focused reference, not the control); no bold in the NIQE column when the focused reference
    scores worse than every method (the caveat says why).
    """
    no_bold = {"niqe"} if _niqe_reference_last(summaries) else set()
    best: dict[str, float | None] = {}
    for k in metrics:
        ranked = {
            s.method: s.metrics[k].mean
            for s in summaries
            if s.method not in _UNRANKED and s.complete(k) and s.metrics[k].mean is not None
        }
        best[k] = None if k in no_bold else _best(ranked, HIGHER_IS_BETTER[k])  # type: ignore[arg-type]
    head = [
        "method",
        *(METRIC_LABELS[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in metrics),
    ]
    rows, notes = [], []
    missing: dict[tuple[str, str], list[str]] = {}  # (metric, reason) -> rows with gaps
    for s in summaries:
        name = marked(s.method, marks)
        if s.n_cases and s.n_failed == s.n_cases:
            rows.append([name, *([FAILED] * len(metrics))])
            notes.append(f"{name}: {FAILED} failed — {s.reason}")
            continue
        cells = []
        for k in metrics:
            d = QUALITY_DIGITS[k]
            m = s.metrics[k]
            if m.mean is None and s.method == REFERENCE_NAME and k != "niqe":
                cells.append("—")
                continue
            txt = _fmt(m, d)
            if m.mean is not None and best[k] is not None and s.complete(k):
                if round(m.mean, d) == round(best[k], d):  # type: ignore[arg-type]
                    txt = f"**{txt}**"
            cells.append(txt)
            if m.n < s.n_cases - s.n_failed and k in s.errors:
                missing.setdefault((k, s.errors[k]), []).append(
                    f"{name} ({s.n_cases - s.n_failed - m.n} of {s.n_cases})"
                )
        if s.n_failed:
            name += f" ({FAILED} {s.n_failed}/{s.n_cases})"
            notes.append(f"{s.method}: failed on {s.n_failed} of {s.n_cases} cases — {s.reason}")
        if s.n_infinite_psnr:
            notes.append(
                f"{s.method}: {s.n_infinite_psnr} case(s) identical to the reference, or to "
                f"it up to gain and offset (PSNR ≥ {PSNR_CAP_DB:.0f} dB, counted as "
                f"{PSNR_CAP_DB:.0f} dB)"
            )
        rows.append([name, *cells])
    lines = _table(head, rows)
    for (k, why), where in missing.items():
        notes.append(f"{METRIC_LABELS[k]} n/a for {', '.join(where)} case(s): {why}")
    ceiling = noise_ceiling_note(summaries, best.get("psnr_affine"))
    if ceiling:
        notes.append(ceiling)
    if "niqe" in no_bold:
        notes.append(
            "NIQE: the focused reference scores worse than every method, so no NIQE value is "
            "marked best (see the note on NIQE)."
        )
    if notes:
        lines += ["", *(f"- {n}" for n in dict.fromkeys(notes))]
    return "\n".join(lines) + "\n"


def noise_ceiling_note(summaries: Sequence[QualitySummary], best_db: float | None) -> str | None:
    """How far the best affine-matched PSNR lies below what the references' own noise allows.

    The focused references are micrographs with shot noise of their own; against them a perfect,
    noise-free restoration scores ``10 log10(255² / σ²)`` per case (the mean over cases bounds
    the mean PSNR, as each case's PSNR is bounded by its own).
    """
    ref = next((s for s in summaries if s.method == REFERENCE_NAME), None)
    if ref is None or not ref.noise_ceiling_db:
        return None
    c = np.asarray(ref.noise_ceiling_db, np.float64)
    sigma = 255.0 * 10.0 ** (-c / 20.0)
    mean = float(c.mean())
    spread = (
        f"{sigma.min():.1f}–{sigma.max():.1f} grey levels"
        if sigma.max() - sigma.min() >= 0.05
        else f"{sigma.min():.1f} grey levels"
    )
    per_case = f" ({c.min():.2f}–{c.max():.2f} dB per case)" if c.max() - c.min() >= 0.005 else ""
    text = (
        f"Noise ceiling: the focused references carry noise of their own (σ ≈ {spread} on 0..255, "
        f"wavelet estimate), so even a perfect, noise-free restoration would score only "
        f"{mean:.2f} dB PSNR against them on average{per_case}"
    )
    if best_db is None:
        return text + "."
    return text + (
        f"; the best affine-matched PSNR here, {best_db:.2f} dB, is {mean - best_db:.2f} dB "
        "below it."
    )


def control_verdict(summaries: Sequence[QualitySummary]) -> list[str]:
    """Plain sentences: which methods do not beat the gain/offset control, on which PSNR."""
    control = next((s for s in summaries if s.method == CONTROL_NAME), None)
    if control is None or "psnr" not in control.metrics or control.metrics["psnr"].mean is None:
        return []
    out = []
    for k in ("psnr", "psnr_affine"):
        ref = control.metrics.get(k, MetricSummary()).mean
        if ref is None:
            continue
        losers = [
            f"{s.method} ({s.metrics[k].mean:.2f} vs {ref:.2f} dB)"
            for s in summaries
            if s.method not in _UNRANKED
            and s.metrics.get(k, MetricSummary()).mean is not None
            # equal as printed (2 decimals) is not better: the input equals the control after
            # affine matching, by construction, up to float rounding
            and round(s.metrics[k].mean, 2) <= round(ref, 2)  # type: ignore[arg-type]
        ]
        label = METRIC_LABELS[k].replace(" (dB)", "")
        if losers:
            out.append(
                f"Not better than the control on {label} — no restoration beyond brightness "
                f"by this measure: {', '.join(losers)}."
            )
        else:
            out.append(f"Every method beats the control on {label}.")
    return out


def metrology_markdown(
    summaries: Sequence[MetrologySummary], marks: Mapping[str, str] | None = None
) -> str:
    """Table 4 summary: mean ± std per column, CD(MAE), Avg(MAE) (✗ unless complete);
    ``marks`` as in :func:`quality_markdown`."""
    cols = (*TABLE_COLUMNS, "lwr_unbiased_nm")
    head = ["method", *(COLUMN_LABELS[c] for c in cols), "CD(MAE) (nm) ↓", "Avg(MAE) (nm) ↓"]
    ranked = [s for s in summaries if s.method not in _UNRANKED and s.complete]
    best_cd = _best({s.method: s.cd_mae_nm for s in ranked if s.cd_mae_nm is not None}, False)
    best_avg = _best({s.method: s.avg_mae_nm for s in ranked if s.avg_mae_nm is not None}, False)
    rows, notes = [], []
    for s in summaries:
        name = marked(s.method, marks)
        if s.n_images and not s.n_measured:
            rows.append([name, *([FAILED] * (len(head) - 1))])
            notes.append(f"{name}: {FAILED} not measurable — {s.reason}")
            continue
        if not s.complete:
            name += f" ({FAILED} {s.n_images - s.n_measured}/{s.n_images})"
            notes.append(
                f"{s.method}: not measurable on {s.n_images - s.n_measured} of {s.n_images} "
                f"images — {s.reason}; CD(MAE) and Avg(MAE) are {FAILED}, as in the paper"
            )
        cells = [name, *(_fmt(s.columns[c], 2) for c in cols)]
        for v, best in ((s.cd_mae_nm, best_cd), (s.avg_mae_nm, best_avg)):
            if s.method == REFERENCE_NAME:
                cells.append("—")
            elif v is None:
                cells.append(FAILED if not s.complete else "n/a")
            else:
                bold = best is not None and s.complete and round(v, 2) == round(best, 2)
                cells.append(f"**{v:.2f}**" if bold else f"{v:.2f}")
        rows.append(cells)
    lines = _table(head, rows)
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _short_label(column: str) -> str:
    """A per-image column header: ``PSD (nm)`` for the long PSD label, else the label."""
    label = COLUMN_LABELS[column]
    if ":" in label:  # "PSD: LWR from PSD, noise incl. (nm)" -> "PSD (nm)"
        unit = label[label.rfind(" (") :] if label.endswith(")") else ""
        return label.split(":")[0] + unit
    return label


def _cell(v: float | None, failed: bool) -> str:
    return FAILED if failed else ("n/a" if v is None else f"{v:.2f}")


def metrology_per_image_markdown(
    rows: Sequence[MetrologyRow],
    methods: Sequence[str],
    case_ids: Sequence[str],
    marks: Mapping[str, str] | None = None,
) -> str:
    """Per-image values: the paper's I1/I2 column layout for up to 4 images, else one row per
    (image, method); ``marks`` as in :func:`quality_markdown`."""
    index = {(r.method, r.case_id): r for r in rows}
    legend = "; ".join(f"I{i + 1} = `{cid}`" for i, cid in enumerate(case_ids))
    legend += "; ΔCD = absolute CD error against the focused image"
    if len(case_ids) <= _PER_IMAGE_COLUMNS:
        head = ["method"]
        for c in TABLE_COLUMNS:
            head += [f"{_short_label(c)} I{i + 1}" for i in range(len(case_ids))]
        head += [f"ΔCD (nm) I{i + 1}" for i in range(len(case_ids))]
        body = []
        for m in methods:
            cells = [marked(m, marks)]
            for c in (*TABLE_COLUMNS, "cd_abs_error_nm"):
                for cid in case_ids:
                    r = index.get((m, cid))
                    if c == "cd_abs_error_nm" and m == REFERENCE_NAME:
                        cells.append("—")
                    else:
                        cells.append(
                            _cell(None if r is None else r.value(c), r is None or bool(r.failed))
                        )
            body.append(cells)
        return legend + ".\n\n" + "\n".join(_table(head, body)) + "\n"
    head = ["image", "method", *(_short_label(c) for c in TABLE_COLUMNS), "ΔCD (nm)"]
    body = []
    for i, cid in enumerate(case_ids):
        for m in methods:
            r = index.get((m, cid))
            bad = r is None or bool(r.failed)
            vals = [_cell(None if r is None else r.value(c), bad) for c in TABLE_COLUMNS]
            err = (
                "—" if m == REFERENCE_NAME else _cell(None if r is None else r.cd_abs_error_nm, bad)
            )
            body.append([f"I{i + 1}", marked(m, marks), *vals, err])
    return legend + ".\n\n" + "\n".join(_table(head, body)) + "\n"


def readme_table(
    quality: Sequence[QualitySummary],
    metrology: Sequence[MetrologySummary],
    marks: Mapping[str, str] | None = None,
) -> str:
    """The compact table a README can paste: PSNR, affine-matched PSNR, SSIM, CD(MAE), Avg(MAE).

    ``marks``: method -> a mark after its name (explained in a note under the table)."""
    marks = marks or {}
    metro = {s.method: s for s in metrology}
    head = [
        "method",
        "PSNR (dB)",
        "PSNR affine-matched (dB)",
        "SSIM",
        "CD(MAE) (nm)",
        "Avg(MAE) (nm)",
    ]
    body = []
    for s in quality:
        if s.method == REFERENCE_NAME:
            continue
        cells = [marked(s.method, marks)]
        for k, d in (("psnr", 2), ("psnr_affine", 2), ("ssim", 3)):
            m = s.metrics.get(k)
            failed = s.n_cases > 0 and s.n_failed == s.n_cases
            cells.append(
                FAILED if failed else ("n/a" if m is None or m.mean is None else f"{m.mean:.{d}f}")
            )
        ms = metro.get(s.method)
        for v in (None if ms is None else ms.cd_mae_nm, None if ms is None else ms.avg_mae_nm):
            incomplete = ms is not None and not ms.complete
            cells.append(FAILED if incomplete else ("n/a" if v is None else f"{v:.2f}"))
        body.append(cells)
    return "\n".join(_table(head, body)) + "\n"


def method_order(results: Sequence[MethodResult]) -> list[str]:
    """Row order: the input, the control, the methods, the focused reference last."""
    names = [r.name for r in results]
    first = [n for n in (INPUT_NAME, CONTROL_NAME) if n in names]
    return first + [n for n in names if n not in first and n != REFERENCE_NAME] + [REFERENCE_NAME]
