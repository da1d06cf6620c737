"""Evaluation: the S→S and S→R protocols, the paper's tables, clustering, one runner.

``sem benchmark`` runs a :class:`BenchmarkConfig`; ``sem demo`` runs the same runner on a
preset of it (:func:`demo_config`).

>>> from sem_train.evaluation import demo_config, run_benchmark
>>> report = run_benchmark(demo_config(quick=True, out="demo-report"))  # doctest: +SKIP

Names are imported on first use (PEP 562): a command checks its options with
:mod:`sem_train.evaluation.config` before the runner loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import lazy_exports

__all__ = [
    "CONTROL_NAME",
    "FAILED",
    "INPUT_NAME",
    "QUALITY_METRICS",
    "REFERENCE_NAME",
    "BenchmarkConfig",
    "Case",
    "ClusteringResult",
    "EvalImage",
    "FoundationConfig",
    "GeneratedImages",
    "ManifestMismatchError",
    "MethodResult",
    "MethodRun",
    "MethodWeights",
    "MetrologyRow",
    "MetrologySummary",
    "ProtocolManifest",
    "QualityRow",
    "QualitySummary",
    "Scorer",
    "SkippedFile",
    "affine_match",
    "build_protocol",
    "build_s2r",
    "build_s2s",
    "cluster_embeddings",
    "clustering_markdown",
    "control_run",
    "control_verdicts",
    "demo_config",
    "embed_folder",
    "finetune_network",
    "list_images",
    "list_methods",
    "load_benchmark_config",
    "load_images",
    "load_manifest",
    "method_weights",
    "metrology_summary",
    "quality_summary",
    "replay",
    "run_benchmark",
    "run_method",
    "sample_images",
    "save_manifest",
    "score_image",
    "select_methods",
    "select_split",
    "train_foundation",
]

# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:  # static analysers see the eager imports
    from .clustering import (
        ClusteringResult,
        cluster_embeddings,
        clustering_markdown,
        control_verdicts,
        embed_folder,
    )
    from .config import (
        BenchmarkConfig,
        FoundationConfig,
        GeneratedImages,
        demo_config,
        load_benchmark_config,
    )
    from .foundation import finetune_network, train_foundation
    from .methods import control_run, list_methods, run_method, select_methods
    from .protocols import (
        Case,
        ManifestMismatchError,
        ProtocolManifest,
        build_s2r,
        build_s2s,
        load_manifest,
        replay,
        save_manifest,
        select_split,
    )
    from .quality import QUALITY_METRICS, affine_match, score_image
    from .results import (
        CONTROL_NAME,
        FAILED,
        INPUT_NAME,
        REFERENCE_NAME,
        MethodResult,
        MethodRun,
        MetrologyRow,
        QualityRow,
    )
    from .runner import build_protocol, run_benchmark
    from .scoring import Scorer
    from .sources import EvalImage, SkippedFile, list_images, load_images, sample_images
    from .tables import MetrologySummary, QualitySummary, metrology_summary, quality_summary
    from .weights import MethodWeights, method_weights
