"""Image-quality tables (the paper's Tables 2 and 3): per-image scores and mean ± std per method.

Every method is scored on the same cases against the same focused references. A method that
failed (or failed on a case) keeps its row, marked ✗ with the reason; a metric that could not
be computed is shown as n/a with the reason beneath the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from .protocols import Case
from .quality import HIGHER_IS_BETTER, QualityScorer
from .results import FAILED, MethodRun, fmt_mean_std, mean_std

__all__ = [
    "QUALITY_DIGITS",
    "quality_markdown",
    "quality_rows",
    "quality_summary",
    "reference_row",
]

QUALITY_DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "niqe": 2}
_LABEL = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "niqe": "NIQE"}


def reference_row(case: Case, scores: Mapping[str, float | None]) -> dict[str, Any]:
    """The quality row of ``case``'s focused image itself (method ``'focused'``)."""
    return {
        "method": "focused",
        "case_id": case.case_id,
        "image": case.image,
        "kind": case.kind,
        "setting": case.setting,
        "status": "ok",
        "reason": None,
        **scores,
    }


def quality_rows(
    runs: Sequence[MethodRun],
    cases: Sequence[Case],
    scorer: QualityScorer,
    *,
    include_reference: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per (method, case): the scores, or ``status='failed'`` with the reason.

    With ``include_reference`` the focused image itself is scored too (method ``'focused'``:
    PSNR is infinite against itself and so reported as None; NIQE is its no-reference score).
    """
    rows: list[dict[str, Any]] = []
    total = len(cases) * (len(runs) + int(include_reference))
    bar = tqdm(total=total, desc="image quality", unit="img", disable=not progress, leave=False)
    for run in runs:
        for c in cases:
            row: dict[str, Any] = {
                "method": run.name,
                "case_id": c.case_id,
                "image": c.image,
                "kind": c.kind,
                "setting": c.setting,
            }
            out = run.outputs.get(c.case_id)
            if out is None:
                reason = run.failed or run.case_errors.get(c.case_id) or "no output"
                row.update({"status": "failed", "reason": reason})
                row.update(dict.fromkeys(scorer.metrics))
            else:
                row.update({"status": "ok", "reason": None})
                row.update(scorer.score(out, c.reference))
            rows.append(row)
            bar.update()
    if include_reference:
        for c in cases:
            rows.append(reference_row(c, scorer.score(c.reference, None)))
            bar.update()
    bar.close()
    return rows


def quality_summary(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    methods: Sequence[str] | None = None,
    setting: str | None = None,
) -> list[dict[str, Any]]:
    """Mean and std per method over the cases (of one ``setting`` when given).

    Each summary row has ``method``, ``n_cases``, ``n_failed``, ``reason`` (first failure) and
    ``<metric>_mean``, ``<metric>_std``, ``<metric>_n`` for every metric.
    """
    sel = [r for r in rows if setting is None or r["setting"] == setting]
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"] for r in sel))
    out = []
    for m in order:
        mine = [r for r in sel if r["method"] == m]
        failed = [r for r in mine if r["status"] != "ok"]
        s: dict[str, Any] = {
            "method": m,
            "n_cases": len(mine),
            "n_failed": len(failed),
            "reason": failed[0]["reason"] if failed else None,
        }
        for k in metrics:
            mean, std, n = mean_std(r.get(k) for r in mine if r["status"] == "ok")
            s[f"{k}_mean"], s[f"{k}_std"], s[f"{k}_n"] = mean, std, n
        out.append(s)
    return out


def quality_markdown(
    summary: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    unavailable: Mapping[str, str] | None = None,
) -> str:
    """A markdown table in the paper's layout: one row per method, mean ± std per metric.

    The best mean of each column is in bold (highest PSNR/SSIM, lowest LPIPS/NIQE); the
    focused reference row is not ranked.
    """
    unavailable = dict(unavailable or {})
    best: dict[str, float] = {}
    for k in metrics:
        vals = [s[f"{k}_mean"] for s in summary if s["method"] != "focused"]
        vals = [v for v in vals if v is not None]
        if vals:
            best[k] = max(vals) if HIGHER_IS_BETTER[k] else min(vals)
    head = ["method", *(_LABEL[k] + (" ↑" if HIGHER_IS_BETTER[k] else " ↓") for k in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for s in summary:
        cells = [s["method"]]
        if s["n_failed"] and s["n_failed"] == s["n_cases"]:
            cells += [FAILED] * len(metrics)
            notes.append(f"{s['method']}: {FAILED} failed — {s['reason']}")
        else:
            for k in metrics:
                d = QUALITY_DIGITS[k]
                mean, std = s[f"{k}_mean"], s[f"{k}_std"]
                if mean is None and s["method"] == "focused" and k != "niqe":
                    cells.append("—")
                    continue
                txt = fmt_mean_std(mean, std, d)
                if mean is not None and k in best and round(mean, d) == round(best[k], d):
                    txt = f"**{txt}**"
                cells.append(txt)
            if s["n_failed"]:
                cells[0] += f" ({FAILED} {s['n_failed']}/{s['n_cases']})"
                notes.append(
                    f"{s['method']}: failed on {s['n_failed']} of {s['n_cases']} cases — "
                    f"{s['reason']}"
                )
        lines.append("| " + " | ".join(cells) + " |")
    for k, why in unavailable.items():
        if k in metrics:
            notes.append(f"{_LABEL[k]} unavailable: {why}")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"
