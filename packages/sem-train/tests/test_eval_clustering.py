"""Clustering diagnostics against scikit-learn on embeddings with known clusters."""

from __future__ import annotations

import json

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
    x, _ = _blobs(per=40)
    x = x + np.random.default_rng(2).normal(0, 4.0, x.shape)  # overlapping: samples differ
    r = cluster_embeddings(x, k=10, seed=1, silhouette_sample_size=100)
    assert r.silhouette_sample_size == 100
    # the silhouette of the 100 points a seeded permutation picks (scikit-learn's sampling),
    # computed on that subset alone
    pick = np.random.RandomState(1).permutation(len(x))[:100]
    labels = np.asarray(r.labels)
    subset = silhouette_score(x[pick], labels[pick], metric="cosine")
    full = silhouette_score(x, labels, metric="cosine")
    assert r.silhouette_cosine == pytest.approx(subset, rel=1e-9)
    assert abs(subset - full) > 1e-3  # so the check above tells a sample from all points
    with pytest.raises(ValueError, match="k must be"):
        cluster_embeddings(x[:5], k=10)
    with pytest.raises(ValueError, match="NaN"):
        cluster_embeddings(np.full((20, 3), np.nan))


@pytest.mark.usefixtures("one_torch_thread")
def test_embed_folder_uses_the_checkpoint_encoder(tmp_path):
    import torch
    import torch.nn.functional as F
    from sem_models import build_mae, extract_embeddings, save_model
    from sem_models.testing import MICRO_MAE
    from sem_physics import write_samples
    from sem_train.evaluation import embed_folder

    torch.manual_seed(0)
    model = build_mae("tiny", in_chans=1, **MICRO_MAE)  # 32-px inputs, 8-px patches, width 32
    save_model(model, tmp_path / "ckpt")
    paths = write_samples(tmp_path / "imgs", n_per_kind=2, shape=(64, 72), seed=0)
    emb, names = embed_folder(tmp_path / "ckpt", tmp_path / "imgs", crop_fraction=0.0)
    assert names == sorted(p.name for p in paths)
    assert emb.shape == (6, MICRO_MAE["embed_dim"]) and np.all(np.isfinite(emb))
    # Independent path: resize each file's pixels ourselves and call the model directly.
    from sem_physics import read_image

    x = torch.cat(
        [
            F.interpolate(
                torch.from_numpy(read_image(tmp_path / "imgs" / n).data / 255.0)[
                    None, None
                ].float(),
                size=(32, 32),
                mode="bilinear",
                antialias=True,
            )
            for n in names
        ]
    )
    np.testing.assert_allclose(emb, extract_embeddings(model, x), rtol=1e-4, atol=1e-5)
    r = cluster_embeddings(emb, k=2, seed=0)
    assert r.n_samples == 6 and sum(r.cluster_sizes) == 6
    # The command line gives the same scores and writes the Table 1 files.
    import json

    from sem_train.cli import main

    out = tmp_path / "table1"
    argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--images", str(tmp_path / "imgs")]
    assert main([*argv, "--k", "2", "--crop-fraction", "0", "--out", str(out)]) == 0
    saved = json.loads((out / "clustering.json").read_text())["runs"][str(tmp_path / "ckpt")]
    assert saved["silhouette_cosine"] == pytest.approx(r.silhouette_cosine)
    assert saved["calinski_harabasz"] == pytest.approx(r.calinski_harabasz)
    assert f"| {tmp_path / 'ckpt'} | 6 | 2 |" in (out / "clustering.md").read_text()
    # Two runs with the same folder name keep their own rows; a corrupt image is skipped.
    for parent in ("a", "b"):
        save_model(model, tmp_path / parent / "run")
    (tmp_path / "imgs" / "zz_broken.png").write_bytes(b"\x89PNG broken")
    argv = ["cluster", "--images", str(tmp_path / "imgs"), "--k", "2", "--crop-fraction", "0"]
    for parent in ("a", "b"):
        argv += ["--checkpoint", str(tmp_path / parent / "run")]
    assert main([*argv, "--out", str(out)]) == 0
    saved = json.loads((out / "clustering.json").read_text())
    assert set(saved["runs"]) == {str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")}
    assert [s["path"].endswith("zz_broken.png") for s in saved["skipped_files"]] == [True]
    assert main([*argv, "--strict"]) == 1  # a partial failure, as in sem restore
    # A training run folder is accepted too: its checkpoints/best.json names the export.
    run = tmp_path / "run"
    save_model(model, run / "checkpoints" / "best-00000007")
    (run / "checkpoints" / "best.json").write_text(json.dumps({"dir": "best-00000007"}))
    emb_run, _ = embed_folder(run, tmp_path / "imgs", crop_fraction=0.0)
    np.testing.assert_array_equal(emb_run, emb)
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*no exported model"):
        embed_folder(tmp_path / "imgs", tmp_path / "imgs")


def test_the_encoder_runs_on_the_device_asked_for(tmp_path, monkeypatch, capsys):
    """sem cluster --device reaches the model (auto: CUDA where present); a GPU asked for on a
    machine without one is one line, before any image is read."""
    import torch
    from sem_models import build_mae, save_model
    from sem_physics import write_samples
    from sem_train import distributed
    from sem_train.cli import main

    save_model(build_mae("tiny", img_size=32, patch_size=8, in_chans=1), tmp_path / "ckpt")
    write_samples(tmp_path / "imgs", n_per_kind=1, shape=(64, 72), seed=0)
    argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--images", str(tmp_path / "imgs")]
    argv += ["--k", "2", "--crop-fraction", "0"]
    if not torch.cuda.is_available():
        assert main([*argv, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    asked: list[str] = []
    real = distributed.select_device
    monkeypatch.setattr(
        distributed, "select_device", lambda name: asked.append(name) or real("cpu")
    )
    assert main([*argv, "--device", "cuda"]) == 0
    assert main(argv) == 0
    assert asked == ["cuda", "cuda", "auto", "auto"]  # the model, then its untrained control


def test_cluster_into_a_busy_folder_stops_at_once(tmp_path, capsys, hold_folder):
    from sem_train.cli import main

    out = tmp_path / "table1"
    child = hold_folder(out, "sem cluster --out table1")
    argv = ["cluster", "--checkpoint", str(tmp_path / "none"), "--images", str(tmp_path)]
    assert main([*argv, "--out", str(out)]) == 1  # before the checkpoint is even looked at
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"another run (pid {child.pid}, sem cluster" in err[0]
    assert [p.name for p in out.iterdir()] == [".sem-lock"]


def test_too_few_embeddings_per_cluster_are_warned(caplog):
    """k = 10 on 12 images (a small corpus, the default k) is scored but said to mean little;
    5 per cluster and more is not warned."""
    x, _ = _blobs(per=5)
    with caplog.at_level("WARNING", logger="sem_train.evaluation.clustering"):
        cluster_embeddings(x, k=10, seed=0)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="sem_train.evaluation.clustering"):
        r = cluster_embeddings(x[:12], k=10, seed=0)
    assert r.n_samples == 12
    assert [m.getMessage() for m in caplog.records] == [
        "k-means with k=10 on 12 embeddings (fewer than 5 per cluster): the scores say little "
        "about the representation; use more images or a smaller k"
    ]


def _resized_here(folder, files, size):
    """The files under ``folder`` on [0, 1], resized to ``size`` px as computed in the test
    (bilinear, antialiased): (N, 1, size, size) float32."""
    import torch
    import torch.nn.functional as F
    from sem_physics import read_image

    with torch.no_grad():
        return torch.cat(
            [
                F.interpolate(
                    torch.from_numpy(read_image(folder / f).data / 255.0)[None, None],
                    size=(size, size),
                    mode="bilinear",
                    antialias=True,
                )
                for f in files
            ]
        ).float()


def _micro_checkpoint(folder):
    """A micro MAE (32-px inputs, 8-px patches) saved to ``folder``; the model."""
    import torch
    from sem_models import build_mae, save_model
    from sem_models.testing import MICRO_MAE

    torch.manual_seed(0)
    model = build_mae("tiny", in_chans=1, **MICRO_MAE)
    save_model(model, folder)
    return model


@pytest.mark.usefixtures("one_torch_thread")
def test_an_untrained_checkpoint_scores_as_its_control_and_is_told_so(tmp_path, capsys):
    """The control rows: an encoder of the checkpoint's architecture with its random initial
    weights (seeded by --seed) and the pixels' patch means. A checkpoint that is exactly
    that untrained encoder (seed 0) scores as its control and the verdict says it beats
    nothing; the pixel row is k-means of patch means computed here."""
    from sem_physics import write_samples
    from sem_train.cli import main
    from sklearn.cluster import KMeans

    _micro_checkpoint(tmp_path / "ckpt")  # seed 0, never trained
    write_samples(tmp_path / "imgs", n_per_kind=3, shape=(64, 72), seed=0)
    argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--images", str(tmp_path / "imgs")]
    argv += ["--k", "3", "--crop-fraction", "0", "--no-progress", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "o" / "clustering.json").read_text())
    run = saved["runs"][str(tmp_path / "ckpt")]
    control = saved["controls"]["control: untrained encoder"]
    for key in ("silhouette_cosine", "davies_bouldin", "calinski_harabasz", "images"):
        assert control[key] == run[key]
    untrained = [
        f"{label} ({run[f]:.4g} against {control[f]:.4g}, control: untrained encoder)"
        for label, f in (
            ("silhouette", "silhouette_cosine"),
            ("Davies-Bouldin", "davies_bouldin"),
            ("Calinski-Harabasz", "calinski_harabasz"),
        )
    ]
    (verdict,) = saved["verdicts"]
    assert verdict.startswith(f"{tmp_path / 'ckpt'} does not beat the controls on ")
    assert all(part in verdict for part in untrained)  # a tie is no win
    assert saved["verdicts"][0] in out and "| control: pixels (4×4 patch means) | 9 | 3 |" in out
    files = [f["file"] for f in run["images"]]
    x = _resized_here(tmp_path / "imgs", files, 32)
    means = x.clamp(0, 1).reshape(len(files), 4, 8, 4, 8).mean((2, 4)).reshape(len(files), -1)
    labels = KMeans(n_clusters=3, n_init=10, random_state=0).fit(means.double().numpy()).labels_
    pixel_row = saved["controls"]["control: pixels (4×4 patch means)"]
    assert [i["cluster"] for i in pixel_row["images"]] == labels.tolist()
    md = (tmp_path / "o" / "clustering.md").read_text()
    assert "## Against the controls" in md and saved["verdicts"][0] in md


def test_control_verdicts_name_each_score_a_model_does_not_win():
    from sem_train.evaluation import control_verdicts
    from sem_train.evaluation.clustering import ClusteringResult

    def r(sil, db, ch):
        return ClusteringResult(
            n_samples=9,
            dim=4,
            k=3,
            seed=0,
            silhouette_cosine=sil,
            davies_bouldin=db,
            calinski_harabasz=ch,
            inertia=1.0,
            cluster_sizes=[3, 3, 3],
        )

    controls = {"c1": r(0.5, 0.9, 60), "c2": r(-0.3, 0.7, 40)}
    verdicts = control_verdicts({"good": r(0.6, 0.6, 90), "mixed": r(0.6, 0.8, 50)}, controls)
    assert verdicts[0] == "good beats every control on all three scores"
    assert verdicts[1].startswith(
        "mixed does not beat the controls on Davies-Bouldin (0.8 against 0.7, c2); "
        "Calinski-Harabasz (50 against 60, c1): "
    )
    assert control_verdicts({"good": r(0.6, 0.6, 90)}, {}) == []


@pytest.mark.usefixtures("one_torch_thread")
def test_cluster_json_gives_each_images_cluster_and_the_settings(tmp_path):
    """clustering.json says which image went into which cluster (paths under --images, so two
    subfolders' files are told apart) and how the embeddings were made; the clusters are
    scikit-learn's k-means of embeddings computed here from the encoder's output, and a rerun
    with the same --seed writes the same file."""
    import json

    import torch
    from sem_models.imaging import normalize
    from sem_physics import write_samples
    from sem_train.cli import main
    from sklearn.cluster import KMeans

    model = _micro_checkpoint(tmp_path / "ckpt")
    for sub, seed in (("a", 0), ("b", 1)):
        write_samples(tmp_path / "imgs" / sub, n_per_kind=2, shape=(64, 72), seed=seed)
    files = sorted(
        p.relative_to(tmp_path / "imgs").as_posix() for p in (tmp_path / "imgs").rglob("*.png")
    )
    x = _resized_here(tmp_path / "imgs", files, 32)
    with torch.no_grad():
        latent = model.eval().forward_encoder(normalize(x), 0.0)[0]
    emb = latent[:, 1:].mean(1).double().numpy()
    labels = KMeans(n_clusters=3, n_init=10, random_state=5).fit(emb).labels_
    argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--images", str(tmp_path / "imgs")]
    argv += ["--k", "3", "--seed", "5", "--crop-fraction", "0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "t1")]) == 0
    saved = json.loads((tmp_path / "t1" / "clustering.json").read_text())
    run = saved["runs"][str(tmp_path / "ckpt")]
    assert [i["file"] for i in run["images"]] == files  # a/… and b/… share file names
    assert [i["cluster"] for i in run["images"]] == labels.tolist()
    assert run["checkpoint"] == str((tmp_path / "ckpt").resolve())
    assert (saved["pool"], saved["k"], saved["seed"], saved["crop_fraction"]) == ("mean", 3, 5, 0)
    assert set(saved["fields"]) >= {"silhouette_cosine", "davies_bouldin", "calinski_harabasz"}
    assert "mean of its patch tokens" in (tmp_path / "t1" / "clustering.md").read_text()
    assert main([*argv, "--out", str(tmp_path / "t2")]) == 0
    assert (tmp_path / "t2" / "clustering.json").read_text() == json.dumps(saved, indent=2)


def test_k_not_below_the_number_of_images_names_the_option(tmp_path, capsys):
    """--k 6 on 6 usable images: one line naming --k and the range it takes here, exit 2."""
    from sem_physics import write_samples
    from sem_train.cli import main

    _micro_checkpoint(tmp_path / "ckpt")
    write_samples(tmp_path / "imgs", n_per_kind=2, shape=(64, 72), seed=0)  # 6 images
    argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--images", str(tmp_path / "imgs")]
    assert main([*argv, "--k", "6", "--crop-fraction", "0", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error: --k 6: must be in [2, 5]"), err
    assert not (tmp_path / "t" / "clustering.json").exists()


def test_a_checkpoint_that_is_no_encoder_is_refused_before_any_image_is_read(
    tmp_path, capsys, monkeypatch
):
    """A second --checkpoint that is a saved n2v restorer, an empty folder or a missing path
    stops the run at once (not after the first model's embeddings) with one line naming
    --checkpoint and what it accepts; a shipped model is found by its name."""
    import sem_train.evaluation as evaluation
    from sem_baselines import get_restorer
    from sem_models.pretrained import shipped_model_dir
    from sem_train.cli import main
    from sem_train.commands.cluster import encoder_dir

    _micro_checkpoint(tmp_path / "ckpt")
    get_restorer("n2v").save(tmp_path / "n2v")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(evaluation, "embed_folder", lambda *a, **k: pytest.fail("embedded"))
    for bad in ("n2v", "empty", "missing"):
        argv = ["cluster", "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint"]
        assert main([*argv, str(tmp_path / bad), "--images", str(tmp_path), "--k", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sem: error: --checkpoint {tmp_path / bad}:")
        assert "accepted: a folder written by sem_models.save_model" in err[0], err
    name = "sem-foundation-zero-shot"
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert encoder_dir(name) == shipped_model_dir(name)


@pytest.mark.usefixtures("one_torch_thread")
def test_embed_folder_holds_one_full_resolution_image_at_a_time(tmp_path, monkeypatch, capsys):
    """Each image is resized as it is read: a folder of thousands of micrographs must not sit in
    memory at full resolution (the 46 of a real corpus: 145 MB) before the first is encoded. With
    ``progress`` a bar counts the files."""
    import weakref

    from sem_physics import write_samples
    from sem_train.evaluation import embed_folder, sources

    _micro_checkpoint(tmp_path / "ckpt")
    write_samples(tmp_path / "imgs", n_per_kind=2, shape=(64, 72), seed=0)
    alive: list[weakref.ref] = []
    most = []
    real = sources._load

    def counting_load(*args, **kwargs):
        most.append(sum(r() is not None for r in alive))  # full-resolution images still held
        im = real(*args, **kwargs)
        alive.append(weakref.ref(im.data))
        return im

    monkeypatch.setattr(sources, "_load", counting_load)
    emb, names = embed_folder(
        tmp_path / "ckpt", tmp_path / "imgs", crop_fraction=0.0, progress=True
    )
    assert len(names) == len(most) == 6 and emb.shape[0] == 6
    assert max(most) <= 1, most
    assert "reading images" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_two_checkpoints_warn_once_and_each_skipped_file_is_named_once(tmp_path, capsys):
    """The few-images-per-cluster warning depends on --k and the usable images only, the same
    for every --checkpoint: said once, not once per model. A skipped file is named once in its
    line, in the --strict error and in clustering.json, where its reason does not repeat it."""
    import json

    from sem_physics import write_image, write_samples
    from sem_train.cli import main
    from sem_train.evaluation.clustering import MIN_PER_CLUSTER

    for parent in ("a", "b"):
        _micro_checkpoint(tmp_path / parent / "run")
    imgs = tmp_path / "imgs"
    n = len(write_samples(imgs, n_per_kind=2, shape=(64, 72), seed=0))
    k = 2
    assert n < MIN_PER_CLUSTER * k  # so the warning is due
    tiny = imgs / "aa_tiny.png"  # sorted first: the one the --strict error names
    write_image(tiny, np.full((10, 12), 90, np.uint8), "uint8")
    empty = imgs / "zz_empty.png"
    empty.write_bytes(b"")
    argv = ["cluster", "--images", str(imgs), "--k", str(k), "--crop-fraction", "0"]
    argv += ["--no-progress", "--checkpoint", str(tmp_path / "a" / "run")]
    argv += ["--checkpoint", str(tmp_path / "b" / "run")]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if "per cluster" in line]
    assert len(warned) == 1 and f"k={k} on {n} embeddings" in warned[0], err
    for path in (tiny, empty):
        assert out.count(str(path)) == 1, out  # in its "- skipped `path`: reason" line only
    saved = json.loads((tmp_path / "t" / "clustering.json").read_text())["skipped_files"]
    assert [s["path"] for s in saved] == [str(tiny), str(empty)]
    for s in saved:
        assert s["reason"] and s["path"] not in s["reason"], s
        assert f"- skipped `{s['path']}`: {s['reason']}" in out
    assert "10×12 px" in saved[0]["reason"] and "empty" in saved[1]["reason"]
    assert main([*argv, "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sem: error: --strict: 2 image(s) unusable (first: ") and (
        err.count(str(tiny)) == 1
    ), err


def _two_sizes_of_checkpoints(tmp_path):
    """Two micro MAEs of other weights and input sides (32 and 16 px) under ``tmp_path``."""
    import torch
    from sem_models import build_mae, save_model
    from sem_models.testing import MICRO_MAE

    folders = []
    for seed, side in ((0, 32), (1, 16)):
        torch.manual_seed(seed)
        folder = tmp_path / f"ckpt{side}"
        save_model(build_mae("tiny", in_chans=1, **{**MICRO_MAE, "img_size": side}), folder)
        folders.append(folder)
    return folders


@pytest.mark.usefixtures("one_torch_thread")
def test_several_checkpoints_read_each_image_once_and_score_as_alone(tmp_path, monkeypatch):
    """sem cluster with two --checkpoint (other input sizes) decodes each file once, the
    unusable one too, and writes for each model what a run with that model alone writes;
    the embeddings from the shared images are those of a folder read for the model alone."""
    import json
    from collections import Counter

    from sem_physics import write_image, write_samples
    from sem_train.cli import main
    from sem_train.evaluation import embed_folder, sources
    from sem_train.evaluation.clustering import FolderImages

    ckpts = _two_sizes_of_checkpoints(tmp_path)
    imgs = tmp_path / "imgs"
    files = write_samples(imgs, n_per_kind=2, shape=(64, 72), seed=0)
    tiny = imgs / "aa_tiny.png"
    write_image(tiny, np.full((10, 12), 90, np.uint8), "uint8")
    base = ["cluster", "--images", str(imgs), "--k", "2", "--crop-fraction", "0", "--no-progress"]
    alone = {}
    for c in ckpts:
        assert main([*base, "--checkpoint", str(c), "--out", str(tmp_path / c.name)]) == 0
        alone[str(c)] = json.loads((tmp_path / c.name / "clustering.json").read_text())
    reads: list[str] = []
    real = sources._load

    def counting_load(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sources, "_load", counting_load)
    both = [*base, "--checkpoint", str(ckpts[0]), "--checkpoint", str(ckpts[1])]
    assert main([*both, "--out", str(tmp_path / "both")]) == 0
    assert Counter(reads) == Counter(str(p) for p in [*files, tiny])  # each file once
    saved = json.loads((tmp_path / "both" / "clustering.json").read_text())
    assert list(saved["runs"]) == [str(c) for c in ckpts]
    for run_id, run in saved["runs"].items():
        assert run == alone[run_id]["runs"][run_id]
    assert saved["skipped_files"] == alone[str(ckpts[0])]["skipped_files"] != []
    shared = FolderImages(imgs, sizes=[32, 16], crop_fraction=0.0)
    for c in ckpts:
        own, names = embed_folder(c, imgs, crop_fraction=0.0)
        emb, shared_names = embed_folder(c, imgs, crop_fraction=0.0, read_once=shared)
        np.testing.assert_array_equal(emb, own)
        assert shared_names == names
    with pytest.raises(ValueError, match=r"resized to \[32\] px, not 16 px"):
        embed_folder(ckpts[1], imgs, read_once=FolderImages(imgs, sizes=[32]))
    with pytest.raises(
        ValueError, match=r"read_once holds the images of .*imgs \(crop_fraction 0\)"
    ):
        embed_folder(ckpts[0], tmp_path, crop_fraction=0.0, read_once=shared)


@pytest.mark.usefixtures("one_torch_thread")
def test_the_report_lists_the_warnings_of_the_run(tmp_path, capsys, monkeypatch):
    """clustering.md has a Warnings section with each warning the run printed (few images per
    cluster, a library's Python warning; once, though two checkpoints) and each skipped file;
    a run without warnings has no such section."""
    import warnings

    import sem_train.evaluation as evaluation
    from sem_physics import write_image, write_samples
    from sem_train.cli import main

    ckpts = _two_sizes_of_checkpoints(tmp_path)
    imgs = tmp_path / "imgs"
    n = len(write_samples(imgs, n_per_kind=2, shape=(64, 72), seed=0))
    tiny = imgs / "aa_tiny.png"
    write_image(tiny, np.full((10, 12), 90, np.uint8), "uint8")
    real = evaluation.embed_folder

    def warning_embed(*args, **kwargs):
        warnings.warn("the encoder says: something odd", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "embed_folder", warning_embed)
    argv = ["cluster", "--images", str(imgs), "--k", "2", "--crop-fraction", "0"]
    argv += ["--no-progress", "--checkpoint", str(ckpts[0]), "--checkpoint", str(ckpts[1])]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    report = (tmp_path / "t" / "clustering.md").read_text()
    assert report.count("## Warnings") == 1
    table, section = report.split("## Warnings")
    assert "| model |" in table and "| model |" not in section
    items = [line for line in section.splitlines() if line.startswith("- ")]
    few = [i for i in items if "per cluster" in i]
    assert len(few) == 1 and f"k=2 on {n} embeddings" in few[0], items
    assert [i for i in items if "something odd" in i] == ["- the encoder says: something odd"]
    skipped = [line for line in out.splitlines() if line.startswith("- skipped")]
    assert len(skipped) == 1 and str(tiny) in skipped[0] and skipped[0] in items
    assert len(items) == 3, items
    for line in err.splitlines():  # every warning the terminal showed is in the report
        if "warning: " in line:
            assert f"- {line.split('warning: ', 1)[1]}" in items, (line, items)
    data = json.loads((tmp_path / "t" / "clustering.json").read_text())
    assert [f"- {w}" for w in data["warnings"]] == [i for i in items if i not in skipped]
    tiny.unlink()
    write_samples(imgs / "more", n_per_kind=2, shape=(64, 72), seed=1)  # 12 images: 6 a cluster
    monkeypatch.setattr(evaluation, "embed_folder", real)
    assert main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    assert "Warnings" not in (tmp_path / "quiet" / "clustering.md").read_text()
    assert json.loads((tmp_path / "quiet" / "clustering.json").read_text())["warnings"] == []
