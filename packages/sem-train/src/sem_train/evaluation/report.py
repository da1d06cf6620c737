"""The report folder: ``report.md``, ``table.md``, CSV/JSON of every number, figures.

Everything is written into a staging folder beside the report and moved into place at the
end, so a crash never leaves ``report.md`` of one run beside the CSVs of another. While a run
is under way the folder holds an ``INCOMPLETE`` marker naming it
(:func:`sem_physics.locking.mark_incomplete`, as every command of the toolkit writes it); it
goes when the report is in place.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from sem_metrology import LineOptions, spreadsheet_csv_file
from sem_physics.atomic import atomic_write_text
from sem_physics.locking import clear_incomplete, output_lock

from .cd_blur import cd_blur_markdown, cd_blur_rows
from .config import BenchmarkConfig
from .estimates import ESTIMATE_COLUMNS, estimate_markdown, estimate_rows
from .figures import (
    EDGE_CROP_PX,
    PANEL_CROP_PX,
    Tile,
    psd_styles,
    save_edge_overlays,
    save_panels,
    save_psd_plot,
)
from .harmonics import harmonics_markdown, harmonics_rows
from .protocols import Case, ProtocolManifest
from .quality import METRIC_LABELS
from .results import FAILED, INPUT_NAME, REFERENCE_NAME, MethodResult, MetrologyRow, QualityRow
from .seen import SEEN_MARK, SeenImage, method_note, report_footnote, seen_cells, table_note
from .sources import REPORT_STAGING_PREFIX, SkippedFile, check_report_folder
from .tables import (
    NIQE_CAVEAT,
    MetrologySummary,
    QualitySummary,
    control_verdict,
    marked,
    method_order,
    metrology_markdown,
    metrology_per_image_markdown,
    metrology_summary,
    quality_markdown,
    quality_summary,
    readme_table,
)

__all__ = [
    "REPORT_ITEMS",
    "ReportInputs",
    "safe_name",
    "unique_names",
    "write_report",
]

#: Every file and folder a report consists of (replaced together).
REPORT_ITEMS = (
    "report.md",
    "table.md",
    "results.json",
    "manifest.json",
    "config.json",
    "methods.csv",
    "quality_per_image.csv",
    "quality_summary.csv",
    "metrology_per_image.csv",
    "metrology_summary.csv",
    "psf_estimates.csv",
    "panels",
    "edges",
    "psd",
)


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


def unique_names(texts: Sequence[str]) -> dict[str, str]:
    """:func:`safe_name` of each text, distinct also with case ignored (Windows and macOS fold
    it): a text whose name an earlier one took gets ``_2``, ``_3``... (a suffix no other text's
    own name has), the others keep theirs."""
    texts = list(dict.fromkeys(texts))
    own = {safe_name(t).casefold() for t in texts}
    names: dict[str, str] = {}
    taken: set[str] = set()
    for text in texts:
        base = name = safe_name(text)
        n = 1
        while name.casefold() in taken or (n > 1 and name.casefold() in own):
            n += 1
            name = f"{base}_{n}"
        taken.add(name.casefold())
        names[text] = name
    return names


@dataclass
class ReportInputs:
    """What a report is made of: the protocol, every method's result, the run's context."""

    title: str
    intro: list[str]
    cases: list[Case]
    metrics: tuple[str, ...]
    reference: MethodResult
    results: list[MethodResult]
    figure_cases: list[str]
    not_measured: dict[str, str]
    manifest: ProtocolManifest
    config: BaseModel
    skipped: list[SkippedFile] = field(default_factory=list)
    wall_seconds: float = 0.0
    #: how ``figure_cases`` were chosen, in words (the report states it)
    figure_choice: str = ""
    #: method -> evaluation images its given checkpoint's runs trained or validated on
    seen: dict[str, list[SeenImage]] = field(default_factory=dict)
    #: threads, cores and package versions the numbers were computed with (results.json)
    provenance: dict[str, Any] = field(default_factory=dict)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


#: CSV columns that name a file or a model folder: kept exactly as the names are.
_CSV_VERBATIM = ("image", "case_id", "weights")


def _csv(
    path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """A CSV file a spreadsheet opens as written, by sem-metrology's rule
    (:func:`sem_metrology.spreadsheet_csv_file`): ASCII values (``°`` -> `` deg``, ``±`` ->
    ``+/-``, ``σ`` -> ``sigma``...; the :data:`_CSV_VERBATIM` names as they are), and a UTF-8
    byte-order mark only when a name's other letters remain."""
    clean = [{k: _clean(v) for k, v in r.items()} for r in rows]
    atomic_write_text(path, spreadsheet_csv_file(clean, columns, verbatim=_CSV_VERBATIM))


def _flat(summary: BaseModel) -> dict[str, Any]:
    """A summary model as one CSV row (nested per-metric summaries become ``<name>_mean`` ...)."""
    row: dict[str, Any] = {}
    for k, v in summary.model_dump().items():
        if isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):
            for name, stats in v.items():
                row.update({f"{name}_{s}": x for s, x in stats.items()})
        elif isinstance(v, dict):
            row[k] = "; ".join(f"{a}: {b}" for a, b in v.items()) or None
        elif isinstance(v, list):  # per-case values (the reference's noise ceilings)
            row[k] = "; ".join(f"{x:.4g}" for x in v) or None
        else:
            row[k] = v
    return row


def _labels(results: Sequence[MethodResult], cid: str) -> dict[str, str]:
    out = {}
    for r in results:
        row = next((q for q in r.quality if q.case_id == cid), None)
        if row is not None and row.psnr is not None:
            ssim = "" if row.ssim is None else f", SSIM {row.ssim:.2f}"
            out[r.name] = f"PSNR {row.psnr:.1f} dB{ssim}"
    return out


def _figures(out: Path, inp: ReportInputs, results: Sequence[MethodResult]) -> dict[str, list[str]]:
    by_id = {c.case_id: c for c in inp.cases}
    figs: dict[str, list[str]] = {"panels": [], "edges": [], "psd": []}
    names = unique_names(inp.figure_cases)
    for cid in inp.figure_cases:
        c = by_id[cid]
        labels = _labels(results, cid)
        tiles: list[Tile] = [("defocused input", c.input, labels.get(INPUT_NAME, ""))]
        for r in results:
            if r.name in (INPUT_NAME, REFERENCE_NAME):
                continue
            q = next((x for x in r.quality if x.case_id == cid), None)
            # scored but its output not kept: a result reused from a run with other figure cases
            kept = "output not kept (result reused from a run with other figure cases; --force)"
            why = (q.failed if q is not None else None) or r.failed or (kept if q else "no output")
            img = r.outputs.get(cid)
            tiles.append((r.name, img, labels.get(r.name, "") if img is not None else why))
        tiles.append(("focused (reference)", c.reference, ""))
        p = save_panels(out / "panels" / f"{names[cid]}.png", c, tiles)
        figs["panels"].append(p.relative_to(out).as_posix())
        if cid in inp.reference.measurements:
            images = {REFERENCE_NAME: c.reference}
            meas = {REFERENCE_NAME: inp.reference.measurements[cid]}
            for r in results:
                if cid in r.outputs and r.name != REFERENCE_NAME:
                    images[r.name] = r.outputs[cid]
                    if cid in r.measurements:
                        meas[r.name] = r.measurements[cid]
            # the panels' order: input first, then control, methods, focused
            first = [n for n in (INPUT_NAME,) if n in images]
            rest = [n for n in images if n not in first and n != REFERENCE_NAME]
            images = {n: images[n] for n in [*first, *rest, REFERENCE_NAME]}
            p = save_edge_overlays(out / "edges" / f"{names[cid]}.png", c, images, meas)
            figs["edges"].append(p.relative_to(out).as_posix())
    line_ids = list(inp.reference.measurements)
    settings = unique_names([by_id[cid].setting for cid in line_ids])

    def curves_of(ids: list[str]) -> dict[str, list[Any]]:
        curves = {
            r.name: [r.measurements[cid] for cid in ids if cid in r.measurements]
            for r in [inp.reference, *results]
        }
        if INPUT_NAME in curves:  # input before control, as in the panels
            curves = {
                REFERENCE_NAME: curves.pop(REFERENCE_NAME),
                INPUT_NAME: curves.pop(INPUT_NAME),
            } | curves
        return curves

    styles = psd_styles(curves_of(line_ids))  # one colour per method in every figure
    for setting in settings:
        ids = [cid for cid in line_ids if by_id[cid].setting == setting]
        p = save_psd_plot(
            out / "psd" / f"psd_{settings[setting]}.png",
            f"roughness PSD, mean over {len(ids)} line image(s), setting '{setting}'",
            curves_of(ids),
            styles=styles,
        )
        figs["psd"].append(p.relative_to(out).as_posix())
    return figs


def _convention(inp: ReportInputs) -> Literal["smile", "truth"]:
    """The config's metrology convention (a config without the field: the default's)."""
    default = BenchmarkConfig.model_fields["metrology_convention"].default
    return "truth" if getattr(inp.config, "metrology_convention", default) == "truth" else "smile"


def convention_text(convention: str) -> str:
    """The metrology convention in words, as the report and ``table.md`` name it."""
    how = _CONVENTIONS.get(convention, "")
    return f"metrology convention `{convention}`" + (f" ({how})" if how else "")


#: What each ``metrology_convention`` means (README: CDs differ by about 2 nm between them).
_CONVENTIONS = {
    "smile": "SMILE3 thresholds, as the paper's Table 4",
    "truth": "edges at each image's own half-level",
}


def _markdown(inp: ReportInputs, t: _Tables, figures: dict[str, list[str]]) -> str:
    convention = _convention(inp)
    marks = _marks(inp)
    parts = [f"# {inp.title}", ""]
    parts += [*(f"- {line}" for line in inp.intro), ""] if inp.intro else []
    if inp.skipped:
        parts += ["## Skipped input files", ""]
        parts += [f"- `{s.path}`: {s.reason}" for s in inp.skipped] + [""]
    parts += ["## Summary", "", "Generated from this run (`table.md`):", ""]
    parts += [t.summary]
    parts += [
        "## Image quality (Table 2/3 layout)",
        "",
        f"All {len(inp.cases)} cases (image × setting); mean ± std over cases (population std, "
        "ddof 0). Best of each column in bold, among the methods with a value on every case; "
        "the control and the focused reference are not ranked (a control above every method "
        "is not bolded: the sentence under the table names the methods that do not beat it). "
        "The control is the input with only its true gain "
        "and offset inverted, `(y − b)/a`, no deblurring; the affine-matched PSNR scores each "
        "output after a least-squares gain/offset match to the reference (structure, not "
        "brightness).",
        "",
        quality_markdown(t.quality, inp.metrics, marks),
    ]
    verdict = control_verdict(t.quality)
    parts += [*(f"- {v}" for v in verdict), ""] if verdict else []
    if "niqe" in inp.metrics:
        parts += [f"Note on NIQE: {NIQE_CAVEAT}", ""]
    if len(t.quality_by_setting) > 1:
        for setting, summaries in t.quality_by_setting.items():
            table = quality_markdown(summaries, inp.metrics, marks)
            parts += [f"### Setting `{setting}`", "", table]
    parts += [
        "## Metrology (Table 4 layout)",
        "",
        "Line/space images only; mean ± std over cases (line image × setting, population "
        f"std); {convention_text(convention)}. CD(MAE) and Avg(MAE) against the "
        "focused reference (Avg(MAE) over the five columns CD, CD std, LWR, LER and PSD; a "
        f"method is {FAILED} in both as soon as one image could not be measured, as in the paper). "
        "PSD is the LWR integrated from the width PSD with its noise (the paper's column); the "
        "noise-subtracted LWR is its own column.",
        "",
    ]
    sizes = {
        r.name: f"{r.pixel_size_nm:g} nm/px ({r.pixel_size_source})"
        for r in inp.manifest.references
        if r.pixel_size_nm is not None
    }
    if sizes:
        parts += ["Pixel sizes: " + "; ".join(f"`{k}` {v}" for k, v in sizes.items()) + ".", ""]
    if inp.reference.metrology:
        per_image = metrology_per_image_markdown(
            t.metrology_rows, [s.method for s in t.metrology], t.line_cases, marks
        )
        parts += [metrology_markdown(t.metrology, marks), "### Per image", "", per_image]
        leaves = harmonics_markdown(harmonics_rows(inp.cases, inp.reference.measurements))
        if leaves:
            parts += ["### What the blur leaves of the lines", "", leaves]
        options = LineOptions(convention=convention)
        blur = cd_blur_markdown(cd_blur_rows(inp.cases, inp.reference.measurements, options))
        if blur:
            parts += ["### How the CD reads with blur left on the edges", "", blur]
    else:
        parts.append("No line/space image could be measured.\n")
    parts += [f"- image `{k}` not in the table: {v}" for k, v in inp.not_measured.items()]
    parts += [
        "",
        "## Blind PSF estimates",
        "",
        "What the blind-PSF rows (Richardson-Lucy, Wiener, the foundation model's physics "
        "guides) deconvolve with: `sem_physics.estimate_degradation` of each case's input, "
        "canonical ellipse (Rx ≥ Ry, θ of the Rx axis from x), beside the true setting.",
        "",
        estimate_markdown(t.estimates),
        "## Methods",
        "",
        "Weights: what each learned method loaded (a run folder resolves to its best export; "
        "sha256: the first digits of the SHA-256 over its files, as in `results.json`).",
        "",
        "Settings: each method's settings that differ from its defaults (`method_config` of "
        "the config, `--set`); the row keeps the method's name.",
        "",
        "| method | status | settings | weights | fit (s) | restore (s) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in t.methods:
        weights = (m.weights or "—").replace("|", "\\|")
        settings = (m.settings or "defaults").replace("|", "\\|")
        parts.append(
            f"| {marked(m.method, marks)} | {m.status} | {settings} | {weights} | "
            f"{m.fit_seconds:.1f} | {m.restore_seconds:.1f} | "
            f"{'; '.join(x for x in (m.reason, m.notes) if x)} |"
        )
    said = [(m.method, n) for m in t.methods for n in m.model_notes]
    if said:
        parts += ["", "What the loaded models say of themselves (also warned on stderr):", ""]
        parts += [f"- {marked(k, marks)}: {n}" for k, n in said]
    parts += ["", "## Figures", ""]
    if inp.figure_choice:
        parts += [
            f"Figure cases ({len(inp.figure_cases)}): {inp.figure_choice}"
            + (
                "; `figure_images: [names]` in the config picks others."
                if "figure_images" not in inp.figure_choice
                else "."
            ),
            "",
        ]
    panel, edge = PANEL_CROP_PX, EDGE_CROP_PX
    for kind, caption, text in (
        (
            "panels",
            "Input / each method / focused (same crop, same grey scale)",
            f"The centre {panel}×{panel} px crop (its size in nm in the title, a scale bar on "
            "the first tile) of the input, every method and the focused reference, all on the "
            "focused image's grey scale (its 0.5-99.5 percentiles), so that a method's contrast "
            "or offset error shows.",
        ),
        (
            "edges",
            "Detected edges",
            f"The edges the line metrology found, on a closer centre crop than the panels' "
            f"({edge}×{edge} px against {panel}×{panel} px): leading edges orange, trailing "
            "cyan; each tile's CD and LWR (3σ of the line width) are measured on the whole "
            "image, not only on the crop.",
        ),
        (
            "psd",
            "Roughness PSD of all methods",
            "One-sided power spectral densities of the edge positions (LER) and line widths "
            "(LWR), averaged over the setting's line images: the area under a curve is σ², and "
            "LER and LWR are quoted as 3σ. Each method keeps its colour and dash in every "
            "report (colour-blind-safe Okabe-Ito colours; focused black, defocused input thick "
            "grey, control dark grey dashed).",
        ),
    ):
        for i, f in enumerate(figures.get(kind, [])):
            parts += [f"### {caption}: `{Path(f).stem}`", "", f"![{Path(f).stem}]({f})", ""]
            parts += [text, ""] if i == 0 else []
    parts += [
        "## Files",
        "",
        "- `table.md` — the summary table above, ready to paste",
        "- `quality_per_image.csv`, `quality_summary.csv` — image quality per image / per method",
        "- `metrology_per_image.csv`, `metrology_summary.csv` — metrology per image / per method",
        "- `methods.csv` — status and timing of every method",
        "- `psf_estimates.csv` — the blind PSF estimate of every case's input (px, degrees)",
        "- `results.json` — every summary number; `manifest.json` — the exact protocol inputs; "
        "`config.json` — the run's config (`sem benchmark --config config.json` reruns it)",
        "",
    ]
    if marks:
        parts += ["---", "", report_footnote(), ""]
    return "\n".join(parts)


class MethodStatus(BaseModel):
    """One row of the methods table: status, the weights it loaded, timing, notes."""

    method: str
    status: str
    reason: str | None = None
    settings: str | None = Field(default=None, description="settings that differ from the defaults")
    weights: str | None = None
    fit_seconds: float
    restore_seconds: float
    notes: str | None = None
    model_notes: list[str] = Field(
        default_factory=list, description="what the loaded model says of itself"
    )


@dataclass
class _Tables:
    """Every table of a report, computed once from the results."""

    quality_rows: list[QualityRow]
    metrology_rows: list[MetrologyRow]
    quality: list[QualitySummary]
    quality_by_setting: dict[str, list[QualitySummary]]
    metrology: list[MetrologySummary]
    line_cases: list[str]
    methods: list[MethodStatus]
    estimates: list[dict[str, Any]]
    summary: str  # table.md


def _weights_text(r: MethodResult) -> str | None:
    """The methods table's weights cell of ``r`` (None: a method without weights)."""
    return (r.weights.describe() or None) if r.weights is not None else None


def _given_weights_note(results: Sequence[MethodResult]) -> str:
    """A line under ``table.md`` naming the weights the user gave learned rows (a row keeps
    its method's name, so a pasted table would otherwise credit the shipped model); empty
    when every learned row used the shipped model or was trained here."""
    given = [
        f"{r.name}: " + "; ".join(s.describe() for s in r.weights.user_given)
        for r in results
        if r.weights is not None and r.weights.user_given
    ]
    return f"Weights given: {' — '.join(given)}." if given else ""


#: Settings that name weights: the weights line and column name what they loaded.
_WEIGHT_SETTINGS = ("checkpoint_dir", "weights_path")


def method_settings_text(name: str, given: Mapping[str, Any] | None) -> str | None:
    """``"balance=0.05"``: the settings in ``given`` of method ``name`` that differ from its
    config's defaults (weights paths left to the weights column); None when there are none."""
    if not given:
        return None
    from sem_baselines import restorer_config

    try:
        default = restorer_config(name).model_dump(mode="json")
        mine = restorer_config(name, **given).model_dump(mode="json")
    except (KeyError, ValueError, TypeError):  # not a registered method or settings: as given
        default, mine = {}, json.loads(json.dumps(dict(given), default=str))
    diff = [
        f"{k}={v}"
        for k, v in mine.items()
        if k not in _WEIGHT_SETTINGS and (k not in default or default[k] != v)
    ]
    return ", ".join(diff) or None


def _settings_of(inp: ReportInputs) -> dict[str, str]:
    """Method name -> its non-default settings (only methods that have some)."""
    config = getattr(inp.config, "method_config", None) or {}
    out = {}
    for r in inp.results:
        text = method_settings_text(r.name, config.get(r.name))
        if text:
            out[r.name] = text
    return out


def _summary_table(inp: ReportInputs, quality, metrology, settings: Mapping[str, str]) -> str:
    """``table.md``: the table (rows and header fixed: a README pastes it up to the first blank
    line), then after a blank line the notes a pasted table needs: the metrology convention of
    its CD columns, the settings and the weights the user gave its rows."""
    notes = []
    if metrology:
        notes.append(f"CD(MAE), Avg(MAE): {convention_text(_convention(inp))}.")
    if settings:
        given = " — ".join(f"{k}: {v}" for k, v in settings.items())
        notes.append(f"Settings given: {given}.")
    weights = _given_weights_note(inp.results)
    if weights:
        notes.append(weights)
    seen = {k: v for k, v in _seen(inp).items() if v}
    if seen:
        notes.append(table_note(seen, len(inp.manifest.references)))
    marks = {"marks": {k: SEEN_MARK for k in seen}} if seen else {}
    table = readme_table(quality, metrology, **marks)
    if "✗" in table:
        notes.append(
            "✗: not on every case (a method that failed, or a line image not measurable in "
            "its output); report.md says why."
        )
    return table + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _seen(inp: ReportInputs) -> dict[str, list[SeenImage]]:
    """Method -> the evaluation images its given checkpoint's runs trained or validated on."""
    return getattr(inp, "seen", None) or {}


def _marks(inp: ReportInputs) -> dict[str, str]:
    """Method -> :data:`SEEN_MARK` for the methods evaluated on seen images."""
    return {k: SEEN_MARK for k, v in _seen(inp).items() if v}


def _per_image(rows: Sequence[Mapping[str, Any]], seen: set[tuple[str, str]]) -> list[dict]:
    """CSV rows with ``seen_in_training``: the row's image is among its method's seen images."""
    return [{**r, "seen_in_training": (r["method"], r["image"]) in seen} for r in rows]


def _tables(inp: ReportInputs) -> _Tables:
    seen = _seen(inp)
    results = [*inp.results, inp.reference]
    order = method_order(results)
    by_name = {r.name: r for r in results}
    q_rows = [q for n in order for q in by_name[n].quality]
    m_rows = [m for n in order for m in by_name[n].metrology]
    degradations = list(dict.fromkeys(c.setting for c in inp.cases))
    m_sum = [metrology_summary(m_rows, n) for n in order] if inp.reference.metrology else []
    quality = [quality_summary(q_rows, n, inp.metrics) for n in order]
    metrology = [s for s in m_sum if s.n_images]
    settings = _settings_of(inp)
    return _Tables(
        quality_rows=q_rows,
        metrology_rows=m_rows,
        quality=quality,
        quality_by_setting={
            s: [quality_summary(q_rows, n, inp.metrics, s) for n in order] for s in degradations
        },
        metrology=metrology,
        line_cases=list(inp.reference.measurements),
        methods=[
            MethodStatus(
                method=r.name,
                status="failed" if r.failed else "ok",
                reason=r.failed,
                settings=settings.get(r.name),
                weights=_weights_text(r),
                fit_seconds=round(r.fit_seconds, 2),
                restore_seconds=round(r.restore_seconds, 2),
                notes="; ".join(
                    [*r.notes, *([method_note(seen[r.name])] if seen.get(r.name) else [])]
                )
                or None,
                model_notes=list(r.model_notes),
            )
            for n in order
            for r in inp.results
            if r.name == n
        ],
        estimates=estimate_rows(inp.cases),
        summary=_summary_table(inp, quality, metrology, settings),
    )


def _method_row(m: MethodStatus) -> dict[str, Any]:
    """A ``methods.csv`` row: the model's notes joined in one cell."""
    return m.model_dump() | {"model_notes": "; ".join(m.model_notes) or None}


def _methods_json(
    t: _Tables,
    results: Sequence[MethodResult],
    seen: Mapping[str, Sequence[SeenImage]] | None = None,
) -> list[dict[str, Any]]:
    """``results.json``'s methods: the table's fields and each weights source in full (path
    as given and as read, SHA-256 of every file and over them all)."""
    seen = seen or {}
    by_name = {r.name: r for r in results}
    out = []
    for m in t.methods:
        w = by_name[m.method].weights
        sources = [s.model_dump() | {"sha256": s.sha256} for s in (w.sources if w else [])]
        row = m.model_dump() | {"weights_sources": sources}
        if seen.get(m.method):  # only then: results.json of other runs stays as it was
            row["seen_in_training"] = [vars(x) for x in seen[m.method]]
        out.append(row)
    return out


#: A metric's error message longer than this (LPIPS without its weights: about 600 characters)
#: that several rows share is written out once, in the report's Messages section; the CSV rows
#: and the report's notes give its code (``M1: WeightsNotFoundError, ...``) instead.
LONG_MESSAGE_CHARS = 120


def message_codes(rows: Sequence[BaseModel]) -> dict[str, str]:
    """Long error messages (:data:`LONG_MESSAGE_CHARS`) repeated in ``rows``' ``errors`` ->
    their codes ``M1``, ``M2``, ... in order of first appearance."""
    counts = Counter(
        why
        for r in rows
        for why in getattr(r, "errors", {}).values()
        if len(why) > LONG_MESSAGE_CHARS
    )
    repeated = [why for why, n in counts.items() if n > 1]
    return {why: f"M{i}" for i, why in enumerate(repeated, 1)}


def _short(why: str, codes: Mapping[str, str], where: str = "report.md, section Messages") -> str:
    code = codes.get(why)
    if code is None:
        return why
    kind = why.split(":", 1)[0] if ":" in why[:60] else "error"
    return f"{code} ({kind}; the full message: {where})"


def _with_codes(row: BaseModel, codes: Mapping[str, str]) -> BaseModel:
    errors = getattr(row, "errors", None)
    if not errors or not codes:
        return row
    return row.model_copy(update={"errors": {k: _short(v, codes) for k, v in errors.items()}})


def _messages_section(text: str, codes: Mapping[str, str]) -> str:
    """``text`` with every long message replaced by its code, and the messages listed once
    before the Files section."""
    if not codes:
        return text
    for why in codes:
        text = text.replace(why, _short(why, codes, "Messages below"))
    listing = ["## Messages", ""]
    listing += [f"- **{code}**: {why}" for why, code in codes.items()]
    return text.replace("## Files\n", "\n".join([*listing, "", "## Files", ""]), 1)


def _write(stage: Path, inp: ReportInputs) -> None:
    t = _tables(inp)
    for sub in ("panels", "edges", "psd"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
    codes = message_codes([*t.quality_rows, *t.quality])
    cells = seen_cells(_seen(inp))
    quality_rows = [_flat(_with_codes(r, codes)) for r in t.quality_rows]
    _csv(stage / "quality_per_image.csv", _per_image(quality_rows, cells))
    _csv(stage / "quality_summary.csv", [_flat(_with_codes(s, codes)) for s in t.quality])
    metrology_rows = [r.model_dump() for r in t.metrology_rows]
    _csv(stage / "metrology_per_image.csv", _per_image(metrology_rows, cells))
    _csv(stage / "metrology_summary.csv", [_flat(s) for s in t.metrology])
    _csv(stage / "methods.csv", [_method_row(m) for m in t.methods])
    _csv(stage / "psf_estimates.csv", t.estimates, ESTIMATE_COLUMNS)
    atomic_write_text(stage / "manifest.json", inp.manifest.model_dump_json(indent=2))
    atomic_write_text(stage / "config.json", inp.config.model_dump_json(indent=2))
    figures = _figures(stage, inp, [*inp.results])
    results_json = {
        "title": inp.title,
        "quality_metrics": list(inp.metrics),
        "quality_labels": {k: METRIC_LABELS[k] for k in inp.metrics},
        "quality_summary": [s.model_dump() for s in t.quality],
        "quality_by_setting": {
            k: [s.model_dump() for s in v] for k, v in t.quality_by_setting.items()
        },
        "metrology_summary": [s.model_dump() | {"complete": s.complete} for s in t.metrology],
        "metrology_not_measured": inp.not_measured,
        "skipped_files": [s.model_dump() for s in inp.skipped],
        "methods": _methods_json(t, inp.results, _seen(inp)),
        "psf_estimates": t.estimates,
        "figures": figures,
        "wall_seconds": inp.wall_seconds,
        "config": json.loads(inp.config.model_dump_json()),
        **({"provenance": inp.provenance} if inp.provenance else {}),
    }
    atomic_write_text(
        stage / "results.json", json.dumps(_clean(results_json), indent=2, ensure_ascii=False)
    )
    atomic_write_text(stage / "table.md", t.summary)
    atomic_write_text(stage / "report.md", _messages_section(_markdown(inp, t, figures), codes))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_report(out_dir: str | Path, inp: ReportInputs) -> Path:
    """Write the report into a staging folder, then move it into ``out_dir``; return report.md.

    ``out_dir`` is held meanwhile (:func:`sem_physics.locking.output_lock`; ``sem benchmark``
    and ``sem demo`` hold it for their whole run), so a staging folder found there is one a
    crashed run left, never a live run's. A folder holding files but no earlier evaluation is
    refused (:func:`~.sources.check_report_folder`): its files are not this report's to replace.
    """
    out = Path(out_dir)
    with output_lock(out):
        check_report_folder(out)
        for old in out.glob(f"{REPORT_STAGING_PREFIX}*"):  # left by a crashed run
            _remove(old)
        stage = out / f"{REPORT_STAGING_PREFIX}{os.getpid()}"
        stage.mkdir()
        try:
            _write(stage, inp)
        except BaseException:
            _remove(stage)
            raise
        for name in REPORT_ITEMS:  # the old report goes first: never a mix of two runs
            _remove(out / name)
        for name in REPORT_ITEMS:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
        _remove(stage)
        clear_incomplete(out)
    return out / "report.md"
