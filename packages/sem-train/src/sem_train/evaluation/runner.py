"""The evaluation runner behind ``sem benchmark`` and ``sem demo`` (a preset of the same config).

protocol (seeded inputs) -> every method (fitted as the registry says) -> scored rows -> report.

Each method's result goes to ``<out>/methods/<name>/result.json`` as soon as it is scored,
keyed by the hash of the method's full configuration (its settings, the SHA-256 of the weights
it loads: :mod:`.weights`, the training budget, the protocol's inputs, the metrics): a rerun
skips a method whose hash is unchanged and reruns one whose configuration or weights changed
(a retrained checkpoint at the same path, an upgraded shipped model). A folder whose results belong to other protocol inputs is refused
unless ``force`` is given.

With ``workers > 1`` the methods to run are fitted and run in that many worker processes
(:mod:`.workers`: forked from a fork server, ``cores // workers`` torch threads each, the
training methods first and every other method split into one job per case); scoring and
saving stay in this process (on the cores' remainder, at least one torch thread, while the
workers run), so the report's rounded tables are those of a sequential run; CSV/JSON cells may
differ in their last digits with the threads per process (BM3D, torch kernels), which
``results.json`` records (``provenance``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sem_baselines import FitOptions, registry_entry, restorer_config
from sem_metrology import LineOptions
from sem_physics.atomic import atomic_write_text
from sem_physics.cli_support import stderr_is_terminal
from sem_physics.locking import mark_incomplete, output_lock
from tqdm.auto import tqdm

from .config import BenchmarkConfig
from .methods import control_run, run_method, trained_weights_kept, trains_here
from .protocols import (
    Case,
    ProtocolManifest,
    SplitError,
    build_s2r,
    build_s2s,
    image_record,
)
from .report import ReportInputs, safe_name, write_report
from .results import MethodResult, ResultFileError
from .scoring import Scorer
from .seen import SEEN_MARK, SeenImage, format_warning, seen_images
from .sources import (
    EvalImage,
    SkippedFile,
    SkippedInputsError,
    crop_note,
    dim_note,
    list_images,
    load_images,
    sample_images,
)
from .weights import MethodWeights, method_weights
from .workers import (
    MethodJob,
    RunningJobs,
    beside_workers,
    stop_workers,
    thread_provenance,
    worker_pool,
)

__all__ = ["Protocol", "announce_model_notes", "build_protocol", "method_hash", "run_benchmark"]

log = logging.getLogger(__name__)


@dataclass
class Protocol:
    """A protocol's inputs: the manifest, training/validation images, the evaluation cases."""

    manifest: ProtocolManifest
    train: list[EvalImage]
    val: list[EvalImage]
    cases: list[Case]
    source: str
    notes: list[str] = field(default_factory=list)


def _nothing(what: str, skipped) -> ValueError:
    first = f" (first: {skipped[0].path}: {skipped[0].reason})" if skipped else ""
    return ValueError(f"nothing could be processed: {what}{first}")


def _s2s_settings(cfg: BenchmarkConfig) -> dict[str, Any]:
    """What the S→S protocol takes from the config whatever the images' source."""
    return {
        "n_eval": cfg.n_eval,
        "seed": cfg.seed,
        "ranges": cfg.ranges,
        "settings": cfg.settings,
        "crop_fraction": cfg.crop_fraction,
    }


def _generated(cfg: BenchmarkConfig) -> Protocol:
    g = cfg.generated
    pool = sample_images(g.n_per_kind, g.shape, cfg.seed, kinds=g.kinds)
    train = sample_images(
        max(1, math.ceil(cfg.n_train / 3)), g.shape, cfg.seed + 1, prefix="train_"
    )
    val = sample_images(max(1, math.ceil(cfg.n_val / 3)), g.shape, cfg.seed + 2, prefix="val_")
    split: dict[str, Any] = {
        "n_train": cfg.n_train,
        "n_val": cfg.n_val,
        "train_images": train,
        "val_images": val,
    }
    manifest, train, val, cases = build_s2s(pool, **split, **_s2s_settings(cfg))
    return Protocol(
        manifest,
        train,
        val,
        cases,
        f"{len(pool)} generated sample images ({g.shape[0]}×{g.shape[1]} px)",
    )


def _training_folder(
    cfg: BenchmarkConfig,
) -> tuple[list[EvalImage], list[EvalImage], list[SkippedFile]]:
    """``n_train`` + ``n_val`` images drawn (seeded) from ``train_images``: (train, val, skipped).

    A seeded sample, not the first files in path order, which would take every image of a
    corpus sorted by source from its first one or two sources.
    """
    assert cfg.train_images is not None
    paths = list_images(cfg.train_images)
    want = cfg.n_train + cfg.n_val
    if len(paths) < want and not cfg.shrink_split:
        raise SplitError(
            f"train_images: {len(paths)} image(s) under {cfg.train_images}, but n_train + n_val "
            f"= {want} (set shrink_split: true to use fewer)"
        )
    order = np.random.default_rng(cfg.seed).permutation(len(paths))
    picked = [paths[i] for i in sorted(order[:want])]
    images, skipped = load_images(picked, crop_fraction=cfg.crop_fraction)
    # named apart from the evaluation images (the result rows), as generated training images are
    images = [replace(im, name=f"train_{im.name}") for im in images]
    rng = np.random.default_rng(cfg.seed + 1)
    images = [images[i] for i in rng.permutation(len(images))]
    n_val = min(cfg.n_val, len(images) // 2) if cfg.shrink_split else cfg.n_val
    return images[n_val:], images[:n_val], skipped


def _folder(cfg: BenchmarkConfig) -> Protocol:
    assert cfg.images is not None
    paths = list_images(cfg.images)
    images, skipped = load_images(
        paths, crop_fraction=cfg.crop_fraction, pixel_size_nm=cfg.pixel_size_nm
    )
    if not images:
        raise _nothing(f"none of the {len(paths)} files under {cfg.images} is usable", skipped)
    if cfg.train_images is not None:  # every image evaluated; learned methods train elsewhere
        train, val, train_skipped = _training_folder(cfg)
        manifest, train, val, cases = build_s2s(
            images,
            n_train=len(train),
            n_val=len(val),
            train_images=train,
            val_images=val,
            **_s2s_settings(cfg),
        )
        manifest.skipped = skipped + train_skipped
        source = (
            f"{len(images)} images from {cfg.images}; learned methods trained on {len(train)} "
            f"(+{len(val)} validation) from {cfg.train_images}"
        )
        crops = [
            crop_note(images, cfg.crop_fraction),
            crop_note([*train, *val], cfg.crop_fraction, "training "),
            dim_note(images),
        ]
        return Protocol(manifest, train, val, cases, source, [n for n in crops if n])
    n_train, n_val, notes = cfg.n_train, cfg.n_val, []
    chosen = {"n_train", "n_val"} & cfg.model_fields_set
    if (n_train or n_val) and not chosen and not _any_method_trains(cfg):
        # the defaults hold images back for training: with nothing to train, evaluate them
        n_train = n_val = 0
        notes.append(
            "None of the chosen methods trains on the protocol's images: every usable image "
            "is evaluated (set n_train / n_val to hold images back)."
        )
    short = cfg.shrink_split and len(images) < n_train + n_val + 1
    if short and (n_train or n_val) and not _any_method_trains(cfg):
        n_train = n_val = 0
        notes.append(
            f"{len(images)} usable image(s), all evaluated: none of the chosen methods trains "
            "on the protocol's images."
        )
    one = len(images) == 1 and cfg.shrink_split and n_train > 0
    if cfg.shrink_split and not one and len(images) < n_train + n_val + 1:
        n_val = min(n_val, max(0, (len(images) - 1) // 4))
        n_train = min(n_train, (len(images) - n_val) // 2)
        notes.append(
            f"{len(images)} usable image(s): {n_train} for training, {n_val} for validation, "
            "the rest evaluated."
        )
    try:
        manifest, train, val, cases = build_s2s(
            images, n_train=0 if one else n_train, n_val=0 if one else n_val, **_s2s_settings(cfg)
        )
    except SplitError as err:
        hint = "set shrink_split: true to use fewer"
        if (n_train or n_val) and not _any_method_trains(cfg):
            hint += (
                "; none of the chosen methods trains, so n_train: 0 and n_val: 0 evaluate "
                "every image"
            )
        raise SplitError(f"{err} ({hint})") from None
    notes += [n for n in (crop_note(images, cfg.crop_fraction), dim_note(images)) if n]
    if one:
        train = [images[0]]
        notes.append(
            "Only one image was given: learned methods are trained on that same image "
            "(self-supervised on synthetic defocus of it)."
        )
    manifest.skipped = skipped
    return Protocol(manifest, train, val, cases, f"{len(images)} images from {cfg.images}", notes)


def _any_method_trains(cfg: BenchmarkConfig) -> bool:
    """Whether a method of ``cfg`` trains, pretrains or fine-tunes on the protocol's images."""
    from .methods import trains_here

    settings = cfg.method_config or {}
    return any(trains_here(name, settings.get(name, {})) for name in cfg.method_names())


def _real(cfg: BenchmarkConfig) -> Protocol:
    if cfg.defocused is None or cfg.focused is None:
        raise ValueError("protocol s2r needs 'defocused' and 'focused' image folders")
    notes: list[str] = []
    manifest, cases = build_s2r(
        cfg.defocused,
        cfg.focused,
        crop_fraction=cfg.crop_fraction,
        pixel_size_nm=cfg.pixel_size_nm,
        crop_notes=notes,
    )
    if not cases:
        raise _nothing(f"no usable pair in {cfg.defocused} / {cfg.focused}", manifest.skipped)
    train: list[EvalImage] = []
    val: list[EvalImage] = []
    if cfg.train_images is not None:  # the same seeded draw as the S→S protocol's
        train, val, skipped = _training_folder(cfg)
        manifest.skipped += skipped
        manifest.train = [image_record(im) for im in train]
        manifest.val = [image_record(im) for im in val]
        crop = crop_note([*train, *val], cfg.crop_fraction, "training ")
        notes += [crop] if crop else []
    source = f"{len(cases)} real defocused images from {cfg.defocused}"
    return Protocol(manifest, train, val, cases, source, notes)


def build_protocol(cfg: BenchmarkConfig) -> Protocol:
    """The inputs of ``cfg``'s protocol; unusable files are skipped and listed in the manifest."""
    if cfg.protocol == "s2r":
        proto = _real(cfg)
    else:
        proto = _folder(cfg) if cfg.images is not None else _generated(cfg)
    if cfg.strict and proto.manifest.skipped:
        s = proto.manifest.skipped[0]
        raise SkippedInputsError(
            f"--strict: {len(proto.manifest.skipped)} input file(s) could not be used "
            f"(first: {s.path}: {s.reason})"
        )
    for s in proto.manifest.skipped:  # said where the user looks, not only in the report
        print(f"sem: warning: skipped {s.path}: {s.reason}", file=sys.stderr)
    return proto


def evaluated_files(manifest: ProtocolManifest) -> dict[str, list[str]]:
    """Image name -> the files it was read from (the focused reference; for real input also
    the defocused file), for the images of ``manifest`` that came from files."""
    files: dict[str, list[str]] = {}
    for r in manifest.references:
        if r.source and not r.source.startswith("generated:"):
            files.setdefault(r.name, []).append(r.source)
    for c in manifest.cases:
        if c.input_source and c.input_source not in files.get(c.image, []):
            files.setdefault(c.image, []).append(c.input_source)
    return files


def seen_by_checkpoints(
    names: Sequence[str], weights: dict[str, MethodWeights], manifest: ProtocolManifest
) -> dict[str, list[SeenImage]]:
    """Method -> the evaluation images that the checkpoint the user gave it (or a run it
    descends from) trained or validated on (:mod:`.seen`); each such method is warned about
    on stderr. Methods without given weights, or whose weights hold no ``data_split.json``
    (the shipped model, an external export), are not looked into."""
    files: dict[str, list[str]] | None = None
    found: dict[str, list[SeenImage]] = {}
    for name in names:
        given = weights[name].user_given
        if not given:
            continue
        files = evaluated_files(manifest) if files is None else files
        paths = [p for s in given for p in (s.given, s.path) if p]
        seen = seen_images(paths, files)
        if seen:
            found[name] = seen
            print(format_warning(name, seen, len(manifest.references)), file=sys.stderr)
    return found


def announce_model_notes(results: Sequence[MethodResult]) -> None:
    """Say on stderr, once per method, what each loaded model says of itself (e.g. a dense
    checkpoint: not the paper's MAE + MoE), as ``sem restore`` does; the report lists it too."""
    for r in results:
        for note in dict.fromkeys(r.model_notes):
            print(f"sem: note: {r.name}: {note}", file=sys.stderr)


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def method_hash(
    name: str,
    cfg: BenchmarkConfig,
    manifest: ProtocolManifest,
    weights: MethodWeights | None = None,
    *,
    scoring: bool = True,
) -> str:
    """Hash of everything a method's result depends on: its settings, the contents of the
    weights it loads (:func:`~.weights.method_weights`, computed when not given), how it is
    fitted and with what budget, the protocol's inputs and the metrics. ``scoring=False``
    leaves out how the outputs are scored (metrics, metrology convention): the key of the
    weights a method trains, which a rescoring run reloads instead of training again."""
    entry = registry_entry(name)
    settings = cfg.method_config.get(name, {})
    payload: dict[str, object] = {
        "method": name,
        "fitting": entry.fitting,
        "config": restorer_config(name, **settings).model_dump(mode="json"),
        "protocol": _digest(json.loads(manifest.model_dump_json())),
    }
    if scoring:
        payload["metrics"] = list(cfg.quality_metrics)
        payload["metrology_convention"] = cfg.metrology_convention
    if entry.fitting != "none":
        payload["fit"] = [cfg.epochs, cfg.batch_size, cfg.steps_per_epoch, cfg.seed]
    if entry.fitting in ("pretrained", "finetune"):
        payload["foundation"] = cfg.foundation.model_dump(mode="json")
    weights = method_weights(name, settings) if weights is None else weights
    if weights.sources:  # absent: the key of a method without weights is what it was before
        payload["weights"] = weights.key()
    return _digest(payload)


def _check_inputs(path: Path, manifest: ProtocolManifest, force: bool) -> None:
    if force or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); delete it or rerun with --force") from None
    new = json.loads(manifest.model_dump_json())
    if old != new:
        held_back = isinstance(old, dict) and (old.get("train") or old.get("val"))
        hint = ""
        if held_back and not (new.get("train") or new.get("val")):
            hint = (
                " (they held images back for training; with no training method every image is "
                "now evaluated: set n_train and n_val, e.g. 10 and 2, to keep that split)"
            )
        raise ValueError(
            f"{path.parent.parent} holds results of different protocol inputs{hint}; use another "
            "--out, delete that folder or rerun with --force"
        )


def _stored(folder: Path, digest: str, notes: list[str]) -> MethodResult | None:
    if not (folder / "result.json").is_file():
        return None
    try:
        result = MethodResult.load(folder)
    except ResultFileError as err:
        log.warning("%s; the method is run again", err)
        notes.append(f"{err}; rerun")
        return None
    if result.failed:  # e.g. a checkpoint or shipped model missing then: try again
        return None
    return result if result.config_hash == digest else None


def figure_selection(
    cfg: BenchmarkConfig, cases: Sequence[Case]
) -> tuple[list[str] | None, str | None]:
    """The case ids ``figure_cases`` / ``figure_images`` name and how, in words (None, None:
    the :class:`Scorer`'s default). An image name not among the cases is an error."""
    if cfg.figure_images is not None:
        names = {c.image for c in cases}
        wanted = []
        for given in cfg.figure_images:
            name = given if given in names else Path(given).stem
            if name not in names:
                shown = ", ".join(sorted(names)[:12]) + (", ..." if len(names) > 12 else "")
                raise ValueError(
                    f"figure_images: no evaluation image {given!r} (images: {shown}; training "
                    "and validation images have no cases)"
                )
            wanted.append(name)
        ids = [c.case_id for c in cases if c.image in wanted]
        return ids, "the images `figure_images` names: " + ", ".join(f"`{w}`" for w in wanted)
    if cfg.figure_cases is not None:
        return (
            [c.case_id for c in cases[: cfg.figure_cases]],
            f"the first {cfg.figure_cases} case(s) (`figure_cases: {cfg.figure_cases}`)",
        )
    return None, None


def run_benchmark(
    cfg: BenchmarkConfig, *, force: bool = False, progress: bool | None = None
) -> Path:
    """Run (or resume) the evaluation ``cfg`` describes; returns the path of ``report.md``.

    ``progress``: draw progress bars (None, the default: only when stderr is a terminal, as
    every command of the toolkit does).

    The output folder is held for the whole run (:func:`sem_physics.locking.output_lock`): a
    second run into it stops at once."""
    if not isinstance(cfg, BenchmarkConfig):
        raise TypeError(
            f"run_benchmark takes a BenchmarkConfig (load_benchmark_config(path), "
            f"BenchmarkConfig(**fields) or demo_config(...)); got {type(cfg).__name__}"
        )
    if progress is None:
        progress = stderr_is_terminal()
    with output_lock(cfg.out):
        return _run_benchmark(cfg, force=force, progress=progress)


def _run_benchmark(cfg: BenchmarkConfig, *, force: bool, progress: bool) -> Path:
    t_start = time.perf_counter()
    names = cfg.method_names()
    out = Path(cfg.out)
    proto = build_protocol(cfg)
    figure_ids, figure_choice = figure_selection(cfg, proto.cases)  # before the folder changes
    methods_dir = out / "methods"
    _check_inputs(methods_dir / "manifest.json", proto.manifest, force)
    out.mkdir(parents=True, exist_ok=True)
    mark_incomplete(out, f"{cfg.title} (seed {cfg.seed})")  # the report replaces it
    atomic_write_text(methods_dir / "manifest.json", proto.manifest.model_dump_json(indent=2))
    make_scorer = partial(
        Scorer,
        proto.cases,
        cfg.quality_metrics,
        line_options=LineOptions(convention=cfg.metrology_convention),
        figure_cases=figure_ids,
        figure_choice=figure_choice,
    )
    options = FitOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.steps_per_epoch,
        seed=cfg.seed,
        ranges=cfg.ranges,
        progress=progress,
    )
    parallel = cfg.workers > 1
    provenance = thread_provenance(cfg.workers)  # torch threads before beside_workers' share
    bars = progress and not parallel  # worker processes draw no bars of their own
    from .foundation import finetune_network, train_foundation  # torch and timm: here

    pretrain = partial(train_foundation, cfg=cfg.foundation, seed=cfg.seed, progress=bars)
    finetune = partial(finetune_network, cfg=cfg.foundation, seed=cfg.seed, progress=bars)
    train = [im.data for im in proto.train]
    val = [im.data for im in proto.val]
    log.info("%s: %d cases, %d methods -> %s", cfg.title, len(proto.cases), len(names), out)
    done: dict[str, MethodResult] = {}
    jobs: list[MethodJob] = []
    notes: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    weights: dict[str, MethodWeights] = {}
    for name in names:
        folder = methods_dir / safe_name(name)
        config = cfg.method_config.get(name, {})
        weights[name] = method_weights(name, config)
        digest = method_hash(name, cfg, proto.manifest, weights[name])
        notes[name] = []
        stored = None if force else _stored(folder, digest, notes[name])
        if stored is not None:
            log.info("%s: unchanged results (and weights) in %s, reused", name, folder)
            stored.weights = weights[name]  # the same contents, named by today's paths
            done[name] = stored
            continue
        trains = trains_here(name, config)
        # the key of the weights a method trains here (none for one that only restores)
        fit_key = (
            method_hash(name, cfg, proto.manifest, weights[name], scoring=False) if trains else None
        )
        reuse = (
            fit_key is not None and not force and trained_weights_kept(folder / "model", fit_key)
        )
        if reuse:
            log.info("%s: trained weights in %s unchanged, reloaded", name, folder / "model")
        call = partial(
            run_method,
            name,
            train_images=train if trains else [],
            val_images=val if trains else [],
            config=config,
            options=options.model_copy(update={"progress": bars}),
            pretrain=pretrain,
            finetune=finetune,
            save_dir=folder / "model",
            fit_key=fit_key,
            reuse_fit=reuse,
        )
        # one job even when reloading: should the kept weights not load, it trains them once
        jobs.append(MethodJob(name, call, trains))
        digests[name] = digest
    seen = seen_by_checkpoints(names, weights, proto.manifest)
    bar = tqdm(total=len(names), desc="methods", unit="method", disable=not progress)
    bar.update(len(done))
    pool = worker_pool(cfg.workers) if parallel and jobs else None
    try:
        with beside_workers(cfg.workers) if pool is not None else nullcontext():
            running = RunningJobs(pool, jobs, proto.cases) if pool is not None else None
            scorer = make_scorer()  # meanwhile the workers start on the jobs
            finished = running or ((j.name, j.call(cases=proto.cases)) for j in jobs)
            for name, run in finished:
                run.notes += notes[name]
                done[name] = scorer.score(run, digests[name])
                done[name].weights = weights[name]
                done[name].save(methods_dir / safe_name(name))
                bar.set_postfix_str(name)
                bar.update(1)
    except BaseException:
        if pool is not None:  # nobody will read the running jobs' results: stop them now
            stop_workers(pool)
            pool = None
        raise
    finally:
        bar.close()  # before an interrupt's message, not redrawn after it
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    results = [scorer.score(control_run(proto.cases))] + [done[name] for name in names]
    announce_model_notes(results)
    elapsed = time.perf_counter() - t_start
    intro = [
        f"Inputs: {proto.source}; {len(proto.cases)} cases (settings: "
        f"{', '.join(proto.manifest.settings)}); {len(train)} focused training and {len(val)} "
        f"validation image(s) for the learned methods ({cfg.epochs} epochs"
        f"{f' × {cfg.steps_per_epoch} steps' if cfg.steps_per_epoch else ''}).",
        f"Seed {cfg.seed}: the same inputs on every run (`manifest.json` holds their hashes); "
        "`config.json` reruns this evaluation with `sem benchmark --config`.",
        f"Wall time {elapsed:.0f} s.",
        *proto.notes,
    ]
    if seen:  # the Inputs line counts the benchmark's own split, not the checkpoints' runs
        intro.append(
            "Given checkpoints were trained or validated on some of the evaluation images "
            f"(rows marked {SEEN_MARK}; the table's note and the Methods section name them): "
            + "; ".join(f"{k}: {len(v)} image(s)" for k, v in seen.items())
            + "."
        )
    return write_report(
        out,
        ReportInputs(
            title=cfg.title,
            intro=intro,
            cases=proto.cases,
            metrics=cfg.quality_metrics,
            reference=scorer.reference,
            results=results,
            figure_cases=scorer.figure_cases,
            figure_choice=scorer.figure_choice,
            not_measured=scorer.not_measured,
            manifest=proto.manifest,
            config=cfg,
            skipped=proto.manifest.skipped,
            wall_seconds=elapsed,
            seen=seen,
            provenance=provenance,
        ),
    )
