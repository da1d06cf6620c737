"""Scoring one method's outputs on a protocol: quality rows and metrology rows (no report here).

:class:`Scorer` measures the focused references once (a method's output is then measured with
its reference's tone and orientation); :meth:`Scorer.score` turns a
:class:`MethodRun` into a :class:`MethodResult` that can be stored and reloaded, so a benchmark
resumes method by method and the report is written from results alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from sem_metrology import LineMeasurement, LineOptions
from sem_metrology.preprocess import detect_orientation

from .metrology import measure_like_reference, measure_line_image, metrology_row
from .protocols import Case
from .quality import check_metrics, score_image, score_reference
from .results import REFERENCE_NAME, MethodResult, MethodRun, MetrologyRow, QualityRow

__all__ = ["LINE_KINDS", "MIN_LINE_ANISOTROPY", "Scorer"]

#: Image kinds measured as line/space patterns ("image": a user's image of unknown kind, measured
#: when its focused reference is measurable and oriented like lines).
LINE_KINDS = ("lines", "resist", "real", "image")
#: Gradient anisotropy (:func:`sem_metrology.preprocess.detect_orientation`) of a focused image
#: of unknown kind below which it is not taken for a line/space pattern: lines score 4-16,
#: contact arrays and textures 1.00-1.01. Without it a contact array passes as one 190-nm line.
MIN_LINE_ANISOTROPY = 1.5


def _strip_edges(m: LineMeasurement) -> LineMeasurement:
    return m.model_copy(update={"leading_edges_px": [], "trailing_edges_px": []})


class Scorer:
    """Scores outputs on ``cases`` against their focused references (``metrics`` as in
    :func:`~sem_train.evaluation.quality.check_metrics`: ``psnr`` brings ``psnr_affine``).

    ``figure_cases`` (case ids) keep their outputs and edge positions for the figures; by
    default the first case of each image kind and setting, plus for the user's own images a
    case the line metrology measured (:meth:`_default_figure_cases`). ``figure_choice`` says
    in words how given ``figure_cases`` were chosen; :attr:`figure_choice` is what the report
    states.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        metrics: Sequence[str],
        *,
        line_options: LineOptions | None = None,
        figure_cases: Sequence[str] | None = None,
        figure_choice: str | None = None,
    ):
        if not cases:
            raise ValueError("an evaluation needs at least one case")
        self.cases = list(cases)
        self.metrics = check_metrics(metrics)
        self.line_options = line_options
        self.not_measured: dict[str, str] = {}
        self.references: dict[str, LineMeasurement] = {}
        cache: dict[tuple[str, float], LineMeasurement] = {}  # one reference, several settings
        for c in self.cases:
            if c.kind not in LINE_KINDS:
                continue
            if c.pixel_size_nm is None:
                self.not_measured[c.case_id] = "pixel size unknown (give --pixel-size-nm)"
                continue
            if c.kind == "image":
                _, anisotropy = detect_orientation(c.reference)
                if anisotropy < MIN_LINE_ANISOTROPY:
                    self.not_measured[c.case_id] = (
                        f"not a line/space pattern: gradient anisotropy of the focused image "
                        f"{anisotropy:.2f} < {MIN_LINE_ANISOTROPY}"
                    )
                    continue
            key = (c.image, float(c.pixel_size_nm))
            if key not in cache:
                cache[key] = measure_line_image(c.reference, c.pixel_size_nm, line_options)
            if cache[key].valid:
                self.references[c.case_id] = cache[key]
            else:
                self.not_measured[c.case_id] = (
                    f"focused reference not measurable: {cache[key].reason}"
                )
        if figure_cases is None:
            figure_cases, self.figure_choice = self._default_figure_cases()
        else:
            self.figure_choice = figure_choice or "the cases the config names"
        self.figure_cases = list(figure_cases)
        self.reference = self._reference_result()

    def _default_figure_cases(self) -> tuple[list[str], str]:
        """The first case of each image kind and setting; for a folder of the user's own images
        (kind ``image``, where that is simply the first file) also the first case of each
        setting the line metrology measured, so that the figures show an edge overlay."""
        seen: dict[tuple[str, str], str] = {}
        for c in self.cases:
            seen.setdefault((c.kind, c.setting), c.case_id)
        chosen = set(seen.values())
        how = "the first case of each image kind and setting"
        added = []
        for (kind, setting), cid in seen.items():
            if kind != "image" or cid in self.references:
                continue
            measured = next(
                (
                    c.case_id
                    for c in self.cases
                    if c.kind == kind and c.setting == setting and c.case_id in self.references
                ),
                None,
            )
            if measured is not None:
                chosen.add(measured)
                added.append(measured)
        if added:
            how += (
                ", and the first case of each setting whose focused image the line metrology "
                f"measured ({', '.join(f'`{a}`' for a in added)}), for its edge overlay"
            )
        return [c.case_id for c in self.cases if c.case_id in chosen], how

    def _row(self, method: str, c: Case) -> QualityRow:
        return QualityRow(
            method=method, case_id=c.case_id, image=c.image, kind=c.kind, setting=c.setting
        )

    def _reference_result(self) -> MethodResult:
        """The focused images' own rows: no-reference scores, the measured references."""
        per_image: dict[str, QualityRow] = {}
        quality = []
        for c in self.cases:
            if c.image not in per_image:
                per_image[c.image] = score_reference(
                    self._row(REFERENCE_NAME, c), c.reference, self.metrics
                )
            # one score per image, a row per case: the case's own id and setting
            row = per_image[c.image].model_copy(update={"case_id": c.case_id, "setting": c.setting})
            quality.append(row)
        by_id = {c.case_id: c for c in self.cases}
        metrology = [
            metrology_row(REFERENCE_NAME, cid, by_id[cid].image, by_id[cid].setting, m, None)
            for cid, m in self.references.items()
        ]
        return MethodResult(
            name=REFERENCE_NAME,
            quality=quality,
            metrology=metrology,
            measurements={
                cid: m if cid in self.figure_cases else _strip_edges(m)
                for cid, m in self.references.items()
            },
            outputs={c.case_id: c.reference for c in self.cases if c.case_id in self.figure_cases},
        )

    def score(self, run: MethodRun, config_hash: str = "") -> MethodResult:
        """Quality and metrology rows of one method (and what its figures need)."""
        quality: list[QualityRow] = []
        for c in self.cases:
            row = self._row(run.name, c)
            out = run.outputs.get(c.case_id)
            if out is None:
                quality.append(row.model_copy(update={"failed": run.why_missing(c.case_id)}))
            else:
                quality.append(score_image(row, out, c.reference, self.metrics))
        metrology: list[MetrologyRow] = []
        measurements: dict[str, LineMeasurement] = {}
        for c in self.cases:
            ref = self.references.get(c.case_id)
            if ref is None or c.pixel_size_nm is None:
                continue
            out = run.outputs.get(c.case_id)
            if out is None:
                m = LineMeasurement(
                    valid=False,
                    reason=f"method failed: {run.why_missing(c.case_id)}",
                    pixel_size_nm=float(c.pixel_size_nm),
                    pixel_size_source="given",
                )
            else:
                m = measure_like_reference(out, float(c.pixel_size_nm), ref, self.line_options)
            metrology.append(metrology_row(run.name, c.case_id, c.image, c.setting, m, ref))
            measurements[c.case_id] = m if c.case_id in self.figure_cases else _strip_edges(m)
        return MethodResult(
            name=run.name,
            config_hash=config_hash,
            failed=run.failed,
            fit_seconds=run.fit_seconds,
            restore_seconds=run.restore_seconds,
            quality=quality,
            metrology=metrology,
            measurements=measurements,
            notes=list(run.notes),
            model_notes=list(run.model_notes),
            outputs={k: run.outputs[k] for k in self.figure_cases if k in run.outputs},
        )
