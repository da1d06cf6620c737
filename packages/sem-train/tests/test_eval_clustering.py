"""Clustering diagnostics against scikit-learn on embeddings with known clusters."""

from __future__ import annotations

import numpy as np
import pytest
from sem_train.evaluation import cluster_embeddings, clustering_markdown
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)


def _blobs(k=10, per=30, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    x = np.concatenate([c + rng.normal(0, 0.3, (per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), per)


def test_metrics_match_sklearn_on_known_clusters():
    x, truth = _blobs()
    r = cluster_embeddings(x, k=10, seed=0)
    assert adjusted_rand_score(truth, r.labels) == pytest.approx(1.0)
    # The scores are invariant to label permutation: compare with the true partition.
    assert r.silhouette_cosine == pytest.approx(silhouette_score(x, truth, metric="cosine"))
    assert r.davies_bouldin == pytest.approx(davies_bouldin_score(x, truth))
    assert r.calinski_harabasz == pytest.approx(calinski_harabasz_score(x, truth))
    assert sorted(r.cluster_sizes) == [30] * 10
    assert r.silhouette_sample_size is None
    assert "| toy | 300 | 10 |" in clustering_markdown({"toy": r})


def test_silhouette_sampling_for_large_n_and_bad_input():
    x, truth = _blobs(per=40)
    r = cluster_embeddings(x, k=10, seed=1, silhouette_sample_size=100)
    assert r.silhouette_sample_size == 100
    full = silhouette_score(x, truth, metric="cosine")
    assert abs(r.silhouette_cosine - full) < 0.1  # a 100-point sample of well-separated blobs
    with pytest.raises(ValueError, match="k must be"):
        cluster_embeddings(x[:5], k=10)
    with pytest.raises(ValueError, match="NaN"):
        cluster_embeddings(np.full((20, 3), np.nan))
