"""Evaluation protocols (S→S, S→R), the paper's tables, clustering diagnostics, ``sem demo``.

>>> from sem_train.evaluation import DemoConfig, run_demo
>>> report = run_demo(DemoConfig.quick_preset(out="demo-report"))  # doctest: +SKIP
"""

from .benchmark import BenchmarkConfig, load_benchmark_config, run_benchmark
from .clustering import ClusteringResult, cluster_embeddings, clustering_markdown, embed_folder
from .demo import DemoConfig, run_demo
from .images import EvalImage, list_images, load_image, sample_images
from .methods import list_methods, run_method
from .metrology_table import (
    measure_runs,
    metrology_markdown,
    metrology_rows,
    metrology_summary,
)
from .pipeline import Evaluation, MethodResult
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
from .quality import QualityScorer
from .quality_table import quality_markdown, quality_rows, quality_summary
from .results import FAILED, INPUT_NAME, MethodRun

__all__ = [
    "FAILED",
    "INPUT_NAME",
    "BenchmarkConfig",
    "Case",
    "ClusteringResult",
    "DemoConfig",
    "EvalImage",
    "Evaluation",
    "ManifestMismatchError",
    "MethodResult",
    "MethodRun",
    "ProtocolManifest",
    "QualityScorer",
    "build_s2r",
    "build_s2s",
    "cluster_embeddings",
    "clustering_markdown",
    "embed_folder",
    "list_images",
    "list_methods",
    "load_benchmark_config",
    "load_image",
    "load_manifest",
    "measure_runs",
    "metrology_markdown",
    "metrology_rows",
    "metrology_summary",
    "quality_markdown",
    "quality_rows",
    "quality_summary",
    "replay",
    "run_benchmark",
    "run_demo",
    "run_method",
    "sample_images",
    "save_manifest",
    "select_split",
]
