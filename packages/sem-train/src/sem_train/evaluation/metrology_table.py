"""Metrology table (the paper's Table 4): CD, CD std, LWR, LER and PSD per method, with the
CD(MAE) and Avg(MAE) against the focused reference.

Per case, the focused reference and every method's output are measured with
:func:`sem_metrology.measure_lines` at the same pixel size and options, and compared with
:func:`sem_metrology.compare_measurements`:

    CD(MAE)  = mean over cases of |CD_method − CD_focused|
    Avg(MAE) = mean over cases of mean_m |q_m,method − q_m,focused|,  q ∈ TABLE_METRICS

(TABLE_METRICS = CD, CD std, LWR, LER, and the PSD column read as the unbiased LWR.) An output
that cannot be measured keeps its row and is marked ✗ with the reason; a case whose reference
cannot be measured (not a line/space image) is listed as skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sem_metrology import TABLE_METRICS, LineMeasurement, LineOptions, compare_measurements
from sem_metrology import measure_lines as _measure_lines
from tqdm.auto import tqdm

from .protocols import Case
from .results import FAILED, MethodRun, fmt_mean_std, mean_std

__all__ = [
    "METROLOGY_COLUMNS",
    "measure_case",
    "measure_runs",
    "metrology_markdown",
    "metrology_rows",
    "metrology_summary",
]

#: Table 4 columns: (LineMeasurement field, header).
METROLOGY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cd_nm", "CD (nm)"),
    ("cd_std_nm", "CD std (nm)"),
    ("lwr_nm", "LWR (nm)"),
    ("ler_nm", "LER (nm)"),
    ("lwr_unbiased_nm", "PSD: unbiased LWR (nm)"),
)

Measurements = Mapping[str, LineMeasurement]


def measure_case(
    image: Any, pixel_size_nm: float, options: LineOptions | None = None
) -> LineMeasurement:
    """Measure one image; never raises for an unmeasurable image (``valid=False`` + reason)."""
    try:
        return _measure_lines(image, pixel_size_nm, options)
    except ValueError as err:
        return LineMeasurement(
            valid=False,
            reason=f"not measurable: {err}",
            pixel_size_nm=pixel_size_nm,
            pixel_size_source="given",
        )


def measure_runs(
    runs: Sequence[MethodRun],
    cases: Sequence[Case],
    *,
    options: LineOptions | None = None,
    kinds: Sequence[str] | None = ("lines", "real", "image"),
    progress: bool = True,
) -> tuple[dict[str, LineMeasurement], dict[str, dict[str, LineMeasurement]], dict[str, str]]:
    """Measure the references and every method's outputs on the line/space cases.

    Returns ``(reference, per_method, skipped)``: measurements by case id, and the cases left
    out with the reason (no pixel size, or the focused reference is not measurable).
    """
    reference: dict[str, LineMeasurement] = {}
    skipped: dict[str, str] = {}
    todo = [c for c in cases if kinds is None or c.kind in kinds]
    cache: dict[tuple[str, float], LineMeasurement] = {}  # one reference, several settings
    for c in todo:
        if c.pixel_size_nm is None:
            skipped[c.case_id] = "pixel size unknown (give --pixel-size-nm)"
            continue
        key = (c.image, float(c.pixel_size_nm))
        if key not in cache:
            cache[key] = measure_case(c.reference, c.pixel_size_nm, options)
        ref = cache[key]
        if ref.valid:
            reference[c.case_id] = ref
        else:
            skipped[c.case_id] = f"focused reference not measurable: {ref.reason}"
    per_method: dict[str, dict[str, LineMeasurement]] = {}
    measured = [c for c in todo if c.case_id in reference]
    bar = tqdm(total=len(runs) * len(measured), desc="metrology", unit="img", disable=not progress)
    for run in runs:
        mine: dict[str, LineMeasurement] = {}
        for c in measured:
            out = run.outputs.get(c.case_id)
            if out is None:
                why = run.failed or run.case_errors.get(c.case_id) or "no output"
                mine[c.case_id] = LineMeasurement(
                    valid=False,
                    reason=f"method failed: {why}",
                    pixel_size_nm=float(c.pixel_size_nm or 1.0),
                    pixel_size_source="given",
                )
            else:
                mine[c.case_id] = measure_case(out, float(c.pixel_size_nm or 1.0), options)
            bar.update()
        per_method[run.name] = mine
    bar.close()
    return reference, per_method, skipped


def metrology_rows(
    reference: Measurements, per_method: Mapping[str, Measurements]
) -> list[dict[str, Any]]:
    """One row per (method, case) — the focused reference first — with values and errors."""
    rows: list[dict[str, Any]] = []
    for case_id, ref in reference.items():
        rows.append(_row("focused", case_id, ref, None))
    for method, ms in per_method.items():
        for case_id, ref in reference.items():
            m = ms.get(case_id)
            if m is None:
                m = LineMeasurement(
                    valid=False,
                    reason="no output for this case",
                    pixel_size_nm=ref.pixel_size_nm,
                    pixel_size_source=ref.pixel_size_source,
                )
            rows.append(_row(method, case_id, m, ref))
    return rows


def _row(
    method: str, case_id: str, m: LineMeasurement, ref: LineMeasurement | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method,
        "case_id": case_id,
        "status": "ok" if m.valid else "failed",
        "reason": None if m.valid else m.reason,
        "n_lines": m.n_lines,
    }
    for f, _ in METROLOGY_COLUMNS:
        row[f] = getattr(m, f) if m.valid else None
    row["ler_unbiased_nm"] = m.ler_unbiased_nm if m.valid else None
    if ref is None:
        row["cd_abs_error_nm"] = 0.0
        row["avg_abs_error_nm"] = 0.0
    else:
        cmp = compare_measurements(m, ref, TABLE_METRICS)
        row["cd_abs_error_nm"] = cmp["cd_abs_error_nm"]
        row["avg_abs_error_nm"] = cmp["avg_abs_error"]
        if m.valid and cmp["avg_abs_error"] is None:
            missing = [k for k in TABLE_METRICS if cmp[f"abs_error_{k}"] is None]
            row["status"] = "failed"
            row["reason"] = f"measured, but without {', '.join(missing)}"
    return row


def metrology_summary(
    rows: Sequence[Mapping[str, Any]], methods: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per method: mean ± std of every column over its measured cases, CD(MAE), Avg(MAE).

    ``cd_mae_nm`` and ``avg_mae_nm`` average over the cases the method could be measured on
    (``n_measured`` of ``n_cases``); ``failed`` is True when none could be.
    """
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"] for r in rows))
    if "focused" in {r["method"] for r in rows} and "focused" not in order:
        order = ["focused", *order]
    out = []
    for method in order:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] == "ok"]
        bad = [r for r in mine if r["status"] != "ok"]
        s: dict[str, Any] = {
            "method": method,
            "n_cases": len(mine),
            "n_measured": len(ok),
            "failed": len(mine) > 0 and not ok,
            "reason": bad[0]["reason"] if bad else None,
        }
        for f, _ in METROLOGY_COLUMNS:
            s[f"{f}_mean"], s[f"{f}_std"], _n = mean_std(r[f] for r in ok)
        s["cd_mae_nm"], _, _ = mean_std(r["cd_abs_error_nm"] for r in ok)
        s["avg_mae_nm"], _, _ = mean_std(r["avg_abs_error_nm"] for r in ok)
        out.append(s)
    return out


def metrology_markdown(
    summary: Sequence[Mapping[str, Any]], skipped: Mapping[str, str] | None = None
) -> str:
    """Table 4 layout: method | CD | CD std | LWR | LER | PSD | CD(MAE) | Avg(MAE)."""
    head = ["method", *(h for _, h in METROLOGY_COLUMNS), "CD(MAE) (nm) ↓", "Avg(MAE) (nm) ↓"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = [s for s in summary if s["method"] != "focused" and s["cd_mae_nm"] is not None]
    best_cd = min((s["cd_mae_nm"] for s in ranked), default=None)
    best_avg = min((s["avg_mae_nm"] for s in ranked if s["avg_mae_nm"] is not None), default=None)
    notes = []
    for s in summary:
        name = s["method"]
        if s["failed"]:
            lines.append("| " + " | ".join([name] + [FAILED] * (len(head) - 1)) + " |")
            notes.append(f"{name}: {FAILED} not measurable — {s['reason']}")
            continue
        if s["n_measured"] < s["n_cases"]:
            name += f" ({FAILED} {s['n_cases'] - s['n_measured']}/{s['n_cases']})"
            notes.append(
                f"{s['method']}: not measurable on {s['n_cases'] - s['n_measured']} of "
                f"{s['n_cases']} images — {s['reason']}"
            )
        cells = [name] + [fmt_mean_std(s[f"{f}_mean"], s[f"{f}_std"]) for f, _ in METROLOGY_COLUMNS]
        for key, best in (("cd_mae_nm", best_cd), ("avg_mae_nm", best_avg)):
            v = s[key]
            if s["method"] == "focused":
                cells.append("—")
            elif v is None:
                cells.append("n/a")
            else:
                txt = f"{v:.2f}"
                cells.append(
                    f"**{txt}**" if best is not None and round(v, 2) == round(best, 2) else txt
                )
        lines.append("| " + " | ".join(cells) + " |")
    for case_id, why in (skipped or {}).items():
        notes.append(f"image {case_id} not in the table: {why}")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"
