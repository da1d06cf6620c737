"""From method outputs to the report: scoring, measuring, tables and figures.

:class:`Evaluation` holds one protocol's cases. ``evaluate(run)`` turns one method's outputs
into a :class:`MethodResult` (per-image quality and metrology rows, plus the few outputs and
measurements the figures need) that can be stored and reloaded, so a benchmark can resume
method by method; ``write_report`` assembles every result into the report folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sem_metrology import LineMeasurement, LineOptions

from .metrology_table import (
    measure_runs,
    metrology_markdown,
    metrology_rows,
    metrology_summary,
)
from .protocols import Case, ProtocolManifest, save_manifest
from .quality import QualityScorer
from .quality_table import quality_markdown, quality_rows, quality_summary, reference_row
from .report import (
    safe_name,
    save_edge_overlays,
    save_panels,
    save_psd_plot,
    write_csv,
    write_json,
)
from .results import INPUT_NAME, MethodRun

__all__ = ["Evaluation", "MethodResult"]

_LINE_KINDS = ("lines", "real", "image")


@dataclass
class MethodResult:
    """Everything the report needs from one method (serialisable for resuming)."""

    name: str
    failed: str | None
    fit_seconds: float
    restore_seconds: float
    quality: list[dict[str, Any]]
    metrology: list[dict[str, Any]]
    measurements: dict[str, LineMeasurement] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def save(self, folder: str | Path) -> Path:
        """Write ``result.json`` (+ ``outputs.npz`` of the figure cases) into ``folder``."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        if self.outputs:
            np.savez_compressed(
                d / "outputs.npz", **{safe_name(k): v for k, v in self.outputs.items()}
            )
        meta = {
            "name": self.name,
            "failed": self.failed,
            "fit_seconds": self.fit_seconds,
            "restore_seconds": self.restore_seconds,
            "quality": self.quality,
            "metrology": self.metrology,
            "measurements": {k: m.model_dump(mode="json") for k, m in self.measurements.items()},
            "output_keys": {safe_name(k): k for k in self.outputs},
            "notes": self.notes,
        }
        tmp = d / "result.json.tmp"
        write_json(tmp, meta)
        tmp.replace(d / "result.json")
        return d / "result.json"

    @classmethod
    def load(cls, folder: str | Path) -> MethodResult:
        """Read a result written by :meth:`save`."""
        d = Path(folder)
        meta = json.loads((d / "result.json").read_text())
        outputs: dict[str, np.ndarray] = {}
        if (d / "outputs.npz").is_file():
            with np.load(d / "outputs.npz") as z:
                outputs = {meta["output_keys"][k]: z[k] for k in z.files}
        return cls(
            name=meta["name"],
            failed=meta["failed"],
            fit_seconds=meta["fit_seconds"],
            restore_seconds=meta["restore_seconds"],
            quality=meta["quality"],
            metrology=meta["metrology"],
            measurements={
                k: LineMeasurement.model_validate(v) for k, v in meta["measurements"].items()
            },
            outputs=outputs,
            notes=meta.get("notes", []),
        )


class Evaluation:
    """Score and measure method outputs on one protocol's cases against the focused images.

    ``figure_cases`` (case ids) get image panels, edge overlays and PSD plots; by default the
    first case of each image kind and setting.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        *,
        scorer: QualityScorer | None = None,
        line_options: LineOptions | None = None,
        figure_cases: Sequence[str] | None = None,
        progress: bool = True,
    ):
        if not cases:
            raise ValueError("an evaluation needs at least one case")
        self.cases = list(cases)
        self.scorer = scorer or QualityScorer()
        self.line_options = line_options
        self.progress = progress
        if figure_cases is None:
            seen: dict[tuple[str, str], str] = {}
            for c in self.cases:
                seen.setdefault((c.kind, c.setting), c.case_id)
            figure_cases = list(seen.values())
        self.figure_cases = list(figure_cases)
        # The focused references: measured once, scored once (NIQE).
        dummy = MethodRun(name="focused")
        self.reference, _, self.skipped = measure_runs(
            [dummy], self.cases, options=line_options, kinds=_LINE_KINDS, progress=False
        )
        # No-reference scores of each focused image, once per image (shared by its settings).
        per_image: dict[str, dict[str, float | None]] = {}
        self.reference_quality = []
        for c in self.cases:
            if c.image not in per_image:
                per_image[c.image] = self.scorer.score(c.reference, None)
            self.reference_quality.append(reference_row(c, per_image[c.image]))

    def evaluate(self, run: MethodRun) -> MethodResult:
        """Quality and metrology rows of one method (and what its figures need)."""
        q = quality_rows([run], self.cases, self.scorer, include_reference=False, progress=False)
        _, per_method, _ = measure_runs(
            [run],
            [c for c in self.cases if c.case_id in self.reference],
            options=self.line_options,
            kinds=None,
            progress=False,
        )
        ms = per_method[run.name]
        rows = [
            r for r in metrology_rows(self.reference, {run.name: ms}) if r["method"] == run.name
        ]
        keep_edges = set(self.figure_cases)
        measurements = {
            k: (
                m
                if k in keep_edges
                else m.model_copy(update={"leading_edges_px": [], "trailing_edges_px": []})
            )
            for k, m in ms.items()
        }
        return MethodResult(
            name=run.name,
            failed=run.failed,
            fit_seconds=run.fit_seconds,
            restore_seconds=run.restore_seconds,
            quality=q,
            metrology=rows,
            measurements=measurements,
            outputs={k: run.outputs[k] for k in self.figure_cases if k in run.outputs},
            notes=list(run.notes),
        )

    # ------------------------------------------------------------------ report

    def tables(self, results: Sequence[MethodResult]) -> dict[str, Any]:
        """Per-image rows and summaries of quality and metrology for every method."""
        methods = [r.name for r in results]
        q_rows = [row for r in results for row in r.quality] + self.reference_quality
        metrics = list(self.scorer.metrics)
        settings = list(dict.fromkeys(c.setting for c in self.cases))
        m_rows = [row for row in metrology_rows(self.reference, {}) if row["method"] == "focused"]
        m_rows += [row for r in results for row in r.metrology]
        return {
            "quality_rows": q_rows,
            "quality_summary": quality_summary(q_rows, metrics, methods=[*methods, "focused"]),
            "quality_by_setting": {
                s: quality_summary(q_rows, metrics, methods=[*methods, "focused"], setting=s)
                for s in settings
            },
            "metrology_rows": m_rows,
            "metrology_summary": metrology_summary(m_rows, methods=["focused", *methods]),
        }

    def write_report(
        self,
        out_dir: str | Path,
        results: Sequence[MethodResult],
        *,
        title: str,
        intro: Sequence[str] = (),
        manifest: ProtocolManifest | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``report.md``, CSV/JSON tables and PNG figures to ``out_dir``; return report.md."""
        out = Path(out_dir)
        for sub in ("panels", "edges", "psd"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        t = self.tables(results)
        write_csv(out / "quality_per_image.csv", t["quality_rows"])
        write_csv(out / "quality_summary.csv", t["quality_summary"])
        write_csv(out / "metrology_per_image.csv", t["metrology_rows"])
        write_csv(out / "metrology_summary.csv", t["metrology_summary"])
        if manifest is not None:
            save_manifest(manifest, out / "manifest.json")
        timing = [
            {
                "method": r.name,
                "status": "failed" if r.failed else "ok",
                "reason": r.failed,
                "fit_seconds": round(r.fit_seconds, 2),
                "restore_seconds": round(r.restore_seconds, 2),
                "notes": "; ".join(r.notes) or None,
            }
            for r in results
        ]
        write_csv(out / "methods.csv", timing)
        figures = self._figures(out, results)
        write_json(
            out / "results.json",
            {
                "title": title,
                "quality_metrics": list(self.scorer.metrics),
                "quality_unavailable": self.scorer.unavailable,
                "quality_summary": t["quality_summary"],
                "quality_by_setting": t["quality_by_setting"],
                "metrology_summary": t["metrology_summary"],
                "metrology_skipped": self.skipped,
                "methods": timing,
                "figures": figures,
                **(extra or {}),
            },
        )
        md = self._markdown(title, intro, t, timing, figures)
        (out / "report.md").write_text(md)
        return out / "report.md"

    def _figures(self, out: Path, results: Sequence[MethodResult]) -> dict[str, list[str]]:
        by_id = {c.case_id: c for c in self.cases}
        figs: dict[str, list[str]] = {"panels": [], "edges": [], "psd": []}
        q_index = {(r["method"], r["case_id"]): r for res in results for r in res.quality}
        for cid in self.figure_cases:
            c = by_id[cid]
            runs = [
                MethodRun(
                    name=r.name,
                    outputs=r.outputs,
                    failed=r.failed or (None if cid in r.outputs else "no output"),
                )
                for r in results
            ]
            labels = {}
            for r in results:
                row = q_index.get((r.name, cid))
                if row and row.get("psnr") is not None:
                    labels["input" if r.name == INPUT_NAME else r.name] = (
                        f"PSNR {row['psnr']:.1f} dB, SSIM {row['ssim']:.2f}"
                    )
            p = save_panels(out / "panels" / f"{safe_name(cid)}.png", c, runs, labels=labels)
            figs["panels"].append(p.relative_to(out).as_posix())
            if cid in self.reference:
                images = {"focused": c.reference}
                meas = {"focused": self.reference[cid]}
                for r in results:
                    if cid in r.outputs:
                        images[r.name] = r.outputs[cid]
                        if cid in r.measurements:
                            meas[r.name] = r.measurements[cid]
                p = save_edge_overlays(out / "edges" / f"{safe_name(cid)}.png", c, images, meas)
                figs["edges"].append(p.relative_to(out).as_posix())
        line_cases = [cid for cid in self.reference]
        for setting in dict.fromkeys(by_id[cid].setting for cid in line_cases):
            ids = [cid for cid in line_cases if by_id[cid].setting == setting]
            curves = {"focused": [self.reference[cid] for cid in ids]}
            for r in results:
                curves[r.name] = [r.measurements[cid] for cid in ids if cid in r.measurements]
            p = save_psd_plot(
                out / "psd" / f"psd_{safe_name(setting)}.png",
                f"roughness PSD, mean over {len(ids)} line image(s), setting '{setting}'",
                curves,
            )
            figs["psd"].append(p.relative_to(out).as_posix())
        return figs

    def _markdown(
        self,
        title: str,
        intro: Sequence[str],
        t: dict[str, Any],
        timing: Sequence[dict[str, Any]],
        figures: dict[str, list[str]],
    ) -> str:
        metrics = list(self.scorer.metrics)
        parts = [f"# {title}", ""]
        parts += [*(f"- {line}" for line in intro), ""] if intro else []
        parts += [
            "## Image quality (Table 2/3 layout)",
            "",
            f"All {len(self.cases)} cases; mean ± std over cases. Best of each column in bold.",
            "",
            quality_markdown(t["quality_summary"], metrics, unavailable=self.scorer.unavailable),
        ]
        if len(t["quality_by_setting"]) > 1:
            for setting, summary in t["quality_by_setting"].items():
                parts += [f"### Setting `{setting}`", "", quality_markdown(summary, metrics)]
        parts += [
            "## Metrology (Table 4 layout)",
            "",
            "Line/space images only; mean ± std over images; CD(MAE) and Avg(MAE) against the "
            "focused reference (Avg over CD, CD std, LWR, LER and PSD-based unbiased LWR).",
            "",
        ]
        if self.reference:
            parts.append(metrology_markdown(t["metrology_summary"], self.skipped))
        else:
            parts.append("No line/space image could be measured:\n")
            parts += [f"- {k}: {v}" for k, v in self.skipped.items()]
            parts.append("")
        parts += [
            "## Methods",
            "",
            "| method | status | fit (s) | restore (s) | note |",
            "|---|---|---|---|---|",
        ]
        for m in timing:
            parts.append(
                f"| {m['method']} | {m['status']} | {m['fit_seconds']:.1f} | "
                f"{m['restore_seconds']:.1f} | {m['reason'] or m['notes'] or ''} |"
            )
        parts += ["", "## Figures", ""]
        for kind, caption in (
            ("panels", "Input / each method / focused (same crop, same grey scale)"),
            ("edges", "Detected edges"),
            ("psd", "Roughness PSD of all methods"),
        ):
            for f in figures.get(kind, []):
                parts += [f"### {caption}: `{Path(f).stem}`", "", f"![{Path(f).stem}]({f})", ""]
        parts += [
            "## Files",
            "",
            "- `quality_per_image.csv`, `quality_summary.csv` — image quality per image / per method",
            "- `metrology_per_image.csv`, `metrology_summary.csv` — metrology per image / per method",
            "- `methods.csv` — status and timing of every method",
            "- `results.json` — every summary number; `manifest.json` — the exact protocol inputs",
            "",
        ]
        return "\n".join(parts)
