"""``sem benchmark`` (and ``sem demo``, its preset): resume by config hash, refusals before any
work, skipped inputs, staged reports, one runner for both."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
import yaml
from sem_physics import write_samples
from sem_train.evaluation import demo_config, load_benchmark_config, run_benchmark
from sem_train.evaluation import report as report_mod
from sem_train.evaluation import runner as runner_mod


@pytest.fixture
def sample_dir(tmp_path):
    folder = tmp_path / "focused"
    write_samples(folder, n_per_kind=1, shape=(96, 112), seed=3)
    return folder


def _config(tmp_path, sample_dir, **extra):
    cfg = {
        "protocol": "s2s",
        "images": str(sample_dir),
        "out": str(tmp_path / "bench"),
        "n_train": 1,
        "n_val": 0,
        "n_eval": 2,
        "settings": ["midpoint"],
        "methods": ["input"],
        "epochs": 1,
        "pixel_size_nm": 0.8,
        "figure_cases": 1,
        "quality_metrics": ["psnr", "ssim"],
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_resume_is_keyed_on_the_full_method_config(tmp_path, sample_dir, methods_run):
    extra = {"methods": ["input", "wiener"], "figure_cases": 0}  # no figures: not under test
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, **extra))
    ran = methods_run
    run_benchmark(cfg, progress=False)
    assert ran == ["input", "wiener"]
    result = cfg.out / "methods" / "wiener" / "result.json"
    first = json.loads(result.read_text())
    assert len(first["quality"]) == 2 and not any(r["failed"] for r in first["quality"])
    run_benchmark(cfg, progress=False)  # unchanged: nothing reruns
    assert ran == ["input", "wiener"]
    changed = cfg.model_copy(update={"method_config": {"wiener": {"balance": 0.1}}})
    run_benchmark(changed, progress=False)  # a changed Wiener balance reruns Wiener only
    assert ran == ["input", "wiener", "wiener"]
    second = json.loads(result.read_text())
    assert second["config_hash"] != first["config_hash"]
    assert second["quality"][0]["psnr"] != first["quality"][0]["psnr"]
    # Different inputs (another seed) in the same folder are refused, unless forced.
    other = cfg.model_copy(update={"seed": 1})
    with pytest.raises(ValueError, match="different protocol inputs"):
        run_benchmark(other, progress=False)
    run_benchmark(other, force=True, progress=False)
    assert json.loads((cfg.out / "manifest.json").read_text())["seed"] == 1


def test_a_truncated_result_file_is_named_and_rerun(tmp_path, sample_dir, methods_run, caplog):
    cfg = load_benchmark_config(_config(tmp_path, sample_dir))
    run_benchmark(cfg, progress=False)
    result = cfg.out / "methods" / "input" / "result.json"
    result.write_text(result.read_text()[:50])
    methods_run.clear()  # only the second run counts
    ran = methods_run
    run_benchmark(cfg, progress=False)
    assert ran == ["input"] and str(result) in caplog.text
    assert str(result) in (cfg.out / "report.md").read_text()
    json.loads(result.read_text())  # rewritten whole


def test_config_errors_name_the_field_before_any_work(tmp_path, sample_dir):
    cases = [
        ({"n_eval": 0}, "n_eval"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"quality_metrics": ["psnr", "fid"]}, "'fid'"),
        ({"methods": ["wiener", "weiner"]}, "'weiner'"),
        ({"method_config": {"mae-imagnet": {"weights_path": "w.pth"}}}, "'mae-imagnet'"),
        ({"method_config": {"wiener": {"balanse": 0.1}}}, "balanse"),
        ({"pixel_size_nm": 1e-30}, "pixel_size_nm"),
        ({"out": str(sample_dir / "report")}, "inside the input folder"),
        ({"out": str(sample_dir)}, "inside the input folder"),
    ]
    for extra, needle in cases:
        with pytest.raises(ValueError, match=needle):
            load_benchmark_config(_config(tmp_path, sample_dir, **extra))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark_config(tmp_path / "nope.yaml")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n')
    with pytest.raises(ValueError, match=r"bomb.yaml.*aliases"):
        load_benchmark_config(bomb)
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, protocol="s2r"))
    with pytest.raises(ValueError, match="defocused"):
        run_benchmark(cfg, progress=False)
    assert not cfg.out.exists()


def test_unusable_files_are_skipped_and_reported(tmp_path, sample_dir):
    import tifffile

    (sample_dir / "broken.tif").write_bytes(b"II*\x00not a tiff at all")
    tifffile.imwrite(sample_dir / "tiny.tif", np.full((2, 2), 100, np.uint8))
    cfg = load_benchmark_config(_config(tmp_path, sample_dir))
    report = run_benchmark(cfg, progress=False).read_text()
    manifest = json.loads((cfg.out / "manifest.json").read_text())
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"broken.tif", "tiny.tif"}
    assert "2×2 px" in skipped["tiny.tif"] and "at least 16×16 px" in skipped["tiny.tif"]
    assert "## Skipped input files" in report and "broken.tif" in report
    assert len(manifest["cases"]) == 2  # the 3 good images: 1 training + 2 evaluated
    strict = cfg.model_copy(update={"strict": True})
    with pytest.raises(ValueError, match="--strict: 2 input file"):
        run_benchmark(strict, progress=False)
    only_tiny = tmp_path / "tiny_only"
    only_tiny.mkdir()
    tifffile.imwrite(only_tiny / "one.tif", np.zeros((1, 1), np.uint8))
    bad = cfg.model_copy(update={"images": only_tiny, "out": tmp_path / "r2"})
    with pytest.raises(ValueError, match=r"nothing could be processed.*one.tif.*1×1 px"):
        run_benchmark(bad, progress=False)


def test_missing_metric_cells_render_and_a_crash_keeps_the_old_report(
    tmp_path, sample_dir, monkeypatch
):
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, quality_metrics=["psnr"]))
    report = run_benchmark(cfg, progress=False)
    old = report.read_text()
    assert "SSIM" not in old.split("## Image quality")[1].split("\n\n")[2]  # psnr columns only
    assert not (cfg.out / "INCOMPLETE").exists()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_mod, "save_psd_plot", boom)
    with pytest.raises(OSError, match="No space"):
        run_benchmark(cfg.model_copy(update={"title": "second run"}), force=True, progress=False)
    assert report.read_text() == old  # the earlier report is untouched, not mixed
    marker = (cfg.out / "INCOMPLETE").read_text()
    assert (
        marker.startswith("second run (seed ") and "mixes outputs of an interrupted run" in marker
    )
    assert not list(cfg.out.glob(".report-staging-*"))


def test_a_method_result_interrupted_while_saved_is_run_again(tmp_path, monkeypatch):
    from sem_train.evaluation import results as results_mod
    from sem_train.evaluation.results import MethodResult

    folder = tmp_path / "methods" / "wiener"
    MethodResult(name="wiener", config_hash="h", outputs={"c0": np.zeros((2, 2))}).save(folder)
    assert runner_mod._stored(folder, "h", []) is not None

    def interrupted(path, text):
        raise KeyboardInterrupt  # Ctrl-C once the new outputs.npz is in place

    monkeypatch.setattr(results_mod, "atomic_write_text", interrupted)
    rerun = MethodResult(name="wiener", config_hash="h", outputs={"c0": np.ones((2, 2))})
    with pytest.raises(KeyboardInterrupt):
        rerun.save(folder)
    assert runner_mod._stored(folder, "h", []) is None  # no old result beside new outputs


def test_mrn_is_given_the_validation_images(tmp_path, sample_dir, monkeypatch):
    from sem_baselines import MRNRestorer

    seen = {}

    def fake_fit(self, train_images, val_images=None, options=None, **kwargs):
        seen.update(n_train=len(train_images), n_val=len(val_images or []), options=options)
        raise RuntimeError("stop here")

    monkeypatch.setattr(MRNRestorer, "fit", fake_fit)
    write_samples(sample_dir / "more", n_per_kind=1, shape=(96, 112), seed=4)
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, methods=["mrn"], n_val=2))
    run_benchmark(cfg, progress=False)
    assert seen["n_train"] == 1 and seen["n_val"] == 2
    assert seen["options"].epochs == 1 and seen["options"].seed == cfg.seed
    result = json.loads((cfg.out / "methods" / "mrn" / "result.json").read_text())
    assert "stop here" in result["failed"]


def test_s2s_with_train_images_evaluates_every_image_and_trains_on_the_other_folder(
    tmp_path, sample_dir, monkeypatch
):
    from sem_baselines import MRNRestorer

    seen = {}

    def fake_fit(self, train_images, val_images=None, options=None, **kwargs):
        seen.update(train=list(train_images), val=list(val_images or []))
        raise RuntimeError("stop here")

    monkeypatch.setattr(MRNRestorer, "fit", fake_fit)
    train_dir = tmp_path / "train"
    write_samples(train_dir, n_per_kind=2, shape=(96, 112), seed=40)
    evaluated = sorted(p.stem for p in sample_dir.iterdir())
    cfg = load_benchmark_config(
        _config(
            tmp_path,
            sample_dir,
            methods=["input", "mrn"],
            train_images=str(train_dir),
            n_train=3,
            n_val=1,
            n_eval=100,
        )
    )
    run_benchmark(cfg, progress=False)
    manifest = json.loads((cfg.out / "manifest.json").read_text())
    assert sorted(r["name"] for r in manifest["references"]) == evaluated
    held = {r["name"] for r in manifest["train"] + manifest["val"]}
    assert len(manifest["train"]) == 3 and len(manifest["val"]) == 1
    assert held <= {f"train_{p.stem}" for p in train_dir.iterdir()}
    assert len(seen["train"]) == 3 and len(seen["val"]) == 1
    # the records name the training folder's files by their content
    import hashlib

    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in train_dir.iterdir()}
    assert {r["file_sha256"] for r in manifest["train"] + manifest["val"]} <= digests


def test_s2r_draws_its_training_images_as_s2s_does(tmp_path, sample_dir):
    """The same seeded sample of train_images (not the first files in path order) for both."""
    import tifffile
    from sem_physics import make_sample

    train_dir = tmp_path / "train"
    write_samples(train_dir, n_per_kind=3, shape=(96, 112), seed=40)
    for sub in ("pairs_defocused", "pairs_focused"):
        (tmp_path / sub).mkdir()
    f = make_sample("lines", (96, 128), seed=0)
    tifffile.imwrite(tmp_path / "pairs_focused" / "f0.tif", f.astype(np.uint8))
    tifffile.imwrite(tmp_path / "pairs_defocused" / "d0.tif", (f * 0.5).astype(np.uint8))
    split = {"train_images": str(train_dir), "n_train": 3, "n_val": 2, "seed": 4, "figure_cases": 0}
    drawn = {}
    for protocol, extra in (
        ("s2s", {}),
        ("s2r", {"defocused": str(tmp_path / "pairs_defocused"), "focused": str(tmp_path / "pairs_focused"),
                 "images": None, "crop_fraction": 0.0}),
    ):  # fmt: skip
        out = tmp_path / protocol
        cfg = _config(tmp_path, sample_dir, protocol=protocol, out=str(out), **split, **extra)
        run_benchmark(load_benchmark_config(cfg), progress=False)
        manifest = json.loads((out / "manifest.json").read_text())
        drawn[protocol] = [[r["name"] for r in manifest[k]] for k in ("train", "val")]
    assert drawn["s2r"] == drawn["s2s"]
    first = sorted(f"train_{p.stem}" for p in train_dir.iterdir())[:5]
    assert sorted(drawn["s2r"][0] + drawn["s2r"][1]) != first  # not the first five by name


def test_train_images_with_too_few_files_is_refused_with_the_counts(tmp_path, sample_dir):
    cfg = load_benchmark_config(
        _config(tmp_path, sample_dir, train_images=str(sample_dir), n_train=10, n_val=2)
    )
    with pytest.raises(
        ValueError, match=r"train_images: 3 image\(s\) under .* n_train \+ n_val = 12"
    ):
        run_benchmark(cfg, progress=False)


def test_demo_and_benchmark_share_one_runner(tmp_path):
    quick = {"methods": ["input", "wiener"], "quality_metrics": ["psnr", "ssim"], "figure_cases": 0}
    demo_report = run_benchmark(
        demo_config(quick=True, out=tmp_path / "demo", **quick), force=True, progress=False
    )
    demo_dir = demo_report.parent
    cfg = load_benchmark_config(demo_dir / "config.json", out=str(tmp_path / "bench"))
    bench_dir = run_benchmark(cfg, progress=False).parent
    for name in ("table.md", "quality_summary.csv", "metrology_summary.csv", "manifest.json"):
        assert (demo_dir / name).read_text() == (bench_dir / name).read_text(), name
    assert (demo_dir / "table.md").read_text() in demo_report.read_text()
    with open(demo_dir / "quality_summary.csv", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert {"defocused input", "control (y - b)/a", "wiener", "focused"} <= set(rows)  # ASCII
    # the references' noise ceilings, one per case, on the focused row only
    ceilings = [float(v) for v in rows["focused"]["noise_ceiling_db"].split("; ")]
    assert len(ceilings) == int(rows["focused"]["n_cases"]) and all(20 < c < 60 for c in ceilings)
    assert not rows["wiener"]["noise_ceiling_db"]


def test_report_csvs_are_ascii_but_file_names_with_a_bom_when_those_need_it(tmp_path, sample_dir):
    """Every CSV of a report follows sem-measure's rule: values in ASCII (the control's
    ``y − b`` with a hyphen, so Excel without a byte-order mark shows it as written), the
    images' names exactly as the files have them, and a UTF-8 byte-order mark exactly in the
    files where such a name keeps other letters."""
    names = []
    for i, path in enumerate(sorted(sample_dir.iterdir())):
        names.append(f"Ätzprobe_{i}_5µm_0°")
        path.rename(sample_dir / f"{names[-1]}{path.suffix}")
    cfg = _config(tmp_path, sample_dir, figure_cases=0)
    out = run_benchmark(load_benchmark_config(cfg), progress=False).parent
    named = set()
    for item in report_mod.REPORT_ITEMS:
        if not item.endswith(".csv"):
            continue
        raw = (out / item).read_bytes()
        text = raw.decode("utf-8")
        has_bom = text.startswith("\ufeff")
        assert has_bom == (not text.removeprefix("\ufeff").isascii()), item
        for row in csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))):
            for key, value in row.items():
                if key in ("image", "case_id"):
                    named.add(value.split("@")[0])
                else:
                    assert value.isascii(), (item, key, value)
    assert named and named <= set(names)  # verbatim: "°" and "µ" kept in the names
    with open(out / "quality_summary.csv", encoding="utf-8-sig", newline="") as fh:
        assert "control (y - b)/a" in {r["method"] for r in csv.DictReader(fh)}


def test_every_row_carries_its_cases_setting(tmp_path, sample_dir):
    """The focused references are scored once per image but listed per case, each with the
    case's own setting (the report groups no-reference scores by setting)."""
    cfg = _config(tmp_path, sample_dir, settings=["random", "midpoint"], n_eval=1)
    out = run_benchmark(load_benchmark_config(cfg), progress=False).parent
    with open(out / "quality_per_image.csv", encoding="utf-8") as f:
        per_case = list(csv.DictReader(f))
    assert {r["setting"] for r in per_case if r["method"] == "focused"} == {"random", "midpoint"}
    assert all(r["case_id"].endswith("@" + r["setting"]) for r in per_case)


def test_methods_in_worker_processes_give_the_sequential_tables(tmp_path):
    """workers=2 fits and runs methods in spawned processes (the methods that only restore split
    into one job per case); scoring stays here: the tables of a sequential run."""
    # two classical methods split per case (3 cases: 6 jobs on 2 workers) and one trained here;
    # no figures (the tables are compared)
    quick = {
        "methods": ["input", "wiener", "richardson-lucy", "n2v"],
        "quality_metrics": ["psnr", "ssim"],
        "method_config": {"n2v": {"unet": {"depth": 2, "width": 4}}},
        "figure_cases": 0,
    }
    one = run_benchmark(
        demo_config(quick=True, out=tmp_path / "one", **quick), force=True, progress=False
    ).parent
    two = run_benchmark(
        demo_config(quick=True, out=tmp_path / "two", workers=2, **quick),
        force=True,
        progress=False,
    ).parent
    with (
        open(one / "quality_per_image.csv", encoding="utf-8") as f1,
        open(two / "quality_per_image.csv", encoding="utf-8") as f2,
    ):
        rows1, rows2 = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert [r["method"] for r in rows1] == [r["method"] for r in rows2]
    for a, b in zip(rows1, rows2, strict=True):
        assert a["failed"] == b["failed"] == "", (a["method"], a["failed"], b["failed"])
        for key in ("psnr", "ssim"):
            if a["method"] == "focused":  # the reference row carries no scores
                assert a[key] == b[key] == ""
                continue
            # classical methods are bit-identical; n2v trains with another torch thread count
            tol = 0.05 if a["method"] == "n2v" else 1e-9
            assert abs(float(a[key]) - float(b[key])) <= tol * max(1.0, abs(float(a[key])))
    assert (two / "methods" / "n2v" / "model").is_dir()


def test_an_interrupted_parallel_run_stops_its_workers_at_once(tmp_path, monkeypatch):
    """Ctrl-C while a worker trains: the run ends within seconds and no worker outlives it
    (shutdown() would wait for the running jobs, minutes of training here)."""
    import time

    pools, procs = [], []
    real_pool = runner_mod.worker_pool

    def recording_pool(workers):
        pools.append(real_pool(workers))
        return pools[-1]

    def interrupted(self, run, *args):
        procs.extend(pools[0]._processes.values())
        interrupted.at = time.monotonic()
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "worker_pool", recording_pool)
    monkeypatch.setattr(runner_mod.Scorer, "score", interrupted)
    cfg = demo_config(
        quick=True,
        out=tmp_path / "r",
        workers=2,
        methods=["input", "n2v"],
        quality_metrics=["psnr"],
        epochs=500,  # n2v trains for minutes; "input" is back first
    )
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg, force=True, progress=False)
    assert time.monotonic() - interrupted.at < 10.0
    assert len(procs) == 2
    for proc in procs:
        if os.name == "posix":  # terminated and reaped: no such process
            with pytest.raises(ProcessLookupError):
                os.kill(proc.pid, 0)
        else:  # Windows: os.kill(pid, 0) would send a Ctrl-C event
            assert not proc.is_alive()


def test_s2r_benchmark_scores_real_pairs(tmp_path):
    import tifffile
    from sem_physics import make_sample

    for sub in ("defocused", "focused"):
        (tmp_path / sub).mkdir()
    refs = []
    for i in range(2):
        f = make_sample("lines", (96, 128), seed=i)
        refs.append(f)
        tifffile.imwrite(tmp_path / "focused" / f"f{i}.tif", f.astype(np.uint8))
        tifffile.imwrite(tmp_path / "defocused" / f"d{i}.tif", (f * 0.5).astype(np.uint8))
    cfg = load_benchmark_config(
        _config(
            tmp_path,
            tmp_path,
            protocol="s2r",
            defocused=str(tmp_path / "defocused"),
            focused=str(tmp_path / "focused"),
            images=None,
            out=str(tmp_path / "out" / "bench"),
            crop_fraction=0.0,
        )
    )
    run_benchmark(cfg, progress=False)
    rows = json.loads((cfg.out / "methods" / "input" / "result.json").read_text())["quality"]
    assert [r["setting"] for r in rows] == ["real", "real"]
    for r, f in zip(rows, refs, strict=True):
        a = f.astype(np.uint8).astype(np.float64)
        b = (f * 0.5).astype(np.uint8).astype(np.float64)
        assert r["psnr"] == pytest.approx(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)), rel=1e-4)
    report = (cfg.out / "report.md").read_text()
    assert "control (y − b)/a | ✗" in report and "true gain and offset are unknown" in report


def test_demo_preset_settings_merge_with_the_users_per_method_settings():
    preset = demo_config()
    assert preset.method_config["bm3d"] == {"profile": "lc"}  # the demo's fast BM3D
    cfg = demo_config(method_config={"bm3d": {"threads": 1}, "wiener": {"balance": 0.1}})
    assert cfg.method_config["bm3d"] == {"profile": "lc", "threads": 1}
    assert cfg.method_config["wiener"] == {"balance": 0.1}
    assert demo_config(method_config={"bm3d": {"profile": "np"}}).method_config["bm3d"] == {
        "profile": "np"
    }
    assert "bm3d" not in demo_config(methods=["wiener"]).method_names()


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("table.md", "| a | b |\n|---|---|\n", r"table\.md, line 1, column 3: expected a comment"),
        ("bench.yaml", "protocol: s2s\nmethods: [input\n", r"bench\.yaml, line 3, column 1: "),
        ("bench.json", '{"protocol": "s2s",\n "n_eval": }\n', r"bench\.json, line 2, column 12: "),
    ],
)
def test_a_malformed_benchmark_config_names_the_line_and_column(tmp_path, name, text, where):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ValueError, match=rf"^benchmark config .*{where}") as exc:
        load_benchmark_config(f)
    assert "\n" not in str(exc.value)


def test_benchmark_config_rules_read_without_pydantic_words(tmp_path, sample_dir):
    cases = [
        (
            {"methods": ["wiener", "weiner"]},
            "bench.yaml: unknown method 'weiner' in the method list; available: input",
        ),
        ({"quality_metrics": ["psnr", "fid"]}, "bench.yaml: quality_metrics: unknown quality"),
        ({}, None),
    ]
    for extra, start in cases:
        path = _config(tmp_path, sample_dir, **extra)
        if start is None:
            assert load_benchmark_config(path).method_names() == ["input"]
            continue
        with pytest.raises(ValueError) as exc:
            load_benchmark_config(path)
        msg = str(exc.value)
        assert msg.startswith(f"{tmp_path}/{start}") and "Value error" not in msg, msg
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"empty\.yaml: the config file is empty"):
        load_benchmark_config(tmp_path / "empty.yaml")


def test_a_small_demo_folder_is_all_evaluated_when_no_method_trains(tmp_path, sample_dir):
    """`sem demo --images DIR` with fewer images than its split: an image is kept back for
    training only when a chosen method trains on it; otherwise every image is evaluated."""
    names = {"n2v": ["input", "n2v"], "classical": ["input", "wiener"]}
    protocols = {
        key: runner_mod.build_protocol(
            demo_config(quick=True, out=tmp_path / key, images=sample_dir, methods=methods)
        )
        for key, methods in names.items()
    }
    assert len(protocols["n2v"].train) == 1 and len(protocols["n2v"].manifest.references) == 2
    plain = protocols["classical"]
    assert not plain.train and len(plain.manifest.references) == 3
    assert any("all evaluated" in note for note in plain.notes)


def test_a_benchmark_without_training_methods_evaluates_every_image(tmp_path):
    """The default split holds 10 + 2 images back for training: with only classical methods
    those images were never evaluated. Unless n_train / n_val are given, every image is."""
    folder = tmp_path / "many"
    write_samples(folder, n_per_kind=5, shape=(64, 64), seed=4)  # 15 images
    base = {"protocol": "s2s", "images": str(folder), "out": str(tmp_path / "b")}
    classical = load_benchmark_config_dict({**base, "methods": ["input", "wiener"]})
    proto = runner_mod.build_protocol(classical)
    assert not proto.train and len(proto.manifest.references) == 15
    assert any("every usable image is evaluated" in n for n in proto.notes)
    held = load_benchmark_config_dict({**base, "methods": ["input", "wiener"], "n_train": 10})
    assert len(runner_mod.build_protocol(held).manifest.references) == 3  # as asked
    trains = load_benchmark_config_dict({**base, "methods": ["input", "n2v"]})
    assert len(runner_mod.build_protocol(trains).train) == 10


def load_benchmark_config_dict(data: dict):
    from sem_train.evaluation.config import BenchmarkConfig

    return BenchmarkConfig(**data)


def test_a_rescoring_run_reloads_the_trained_weights_instead_of_training_again(
    tmp_path, sample_dir, monkeypatch
):
    """Only the scoring changed (metrics, metrology convention): a trained method's saved
    weights are reloaded, its outputs equal the first run's, and its row says so. A changed
    training setting trains again, and so does --force."""
    from sem_baselines import registry_entry

    n2v = {"n2v": {"unet": {"depth": 2, "width": 4}}}
    extra = {"methods": ["input", "n2v"], "method_config": n2v, "quality_metrics": ["psnr"]}
    extra |= {"steps_per_epoch": 2, "figure_cases": 0}  # two training steps, no figures
    cfg = load_benchmark_config(_config(tmp_path, sample_dir, **extra))
    cls = registry_entry("n2v").cls
    fits: list[str] = []
    real_fit = cls.fit

    def counting_fit(self, *args, **kwargs):
        fits.append("n2v")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", counting_fit)
    run_benchmark(cfg, progress=False)
    result = cfg.out / "methods" / "n2v" / "result.json"
    first = json.loads(result.read_text())
    assert fits == ["n2v"] and (cfg.out / "methods" / "n2v" / "model" / "fit.json").is_file()

    rescored = cfg.model_copy(update={"quality_metrics": ("psnr", "ssim")})
    run_benchmark(rescored, progress=False)
    second = json.loads(result.read_text())
    assert fits == ["n2v"], "the weights were trained again"
    assert second["config_hash"] != first["config_hash"]
    assert [r["psnr"] for r in second["quality"]] == [r["psnr"] for r in first["quality"]]
    assert all(r["ssim"] is not None for r in second["quality"])
    assert any("trained weights of the earlier run reused" in n for n in second["notes"])
    assert second["fit_seconds"] == first["fit_seconds"]

    wider = {"n2v": {"unet": {"depth": 2, "width": 6}}}
    run_benchmark(rescored.model_copy(update={"method_config": wider}), progress=False)
    assert fits == ["n2v", "n2v"]  # another network: trained again
    run_benchmark(rescored, progress=False, force=True)
    assert fits == ["n2v", "n2v", "n2v"]
    assert not any("reused" in n for n in json.loads(result.read_text())["notes"])
    # kept weights that no longer load: trained again (once), and the row says why
    (cfg.out / "methods" / "n2v" / "model" / "model.safetensors").unlink()
    run_benchmark(cfg, progress=False)
    assert fits == ["n2v"] * 4
    notes = json.loads(result.read_text())["notes"]
    assert any("kept weights did not load" in n for n in notes), notes


def test_run_benchmark_names_what_it_takes_when_given_a_mapping():
    with pytest.raises(TypeError, match=r"takes a BenchmarkConfig .*got dict"):
        run_benchmark({"protocol": "s2s"}, progress=False)


def test_an_earlier_split_is_named_when_a_folder_of_it_is_refused(tmp_path):
    """Results made when the default split held images back even with no training method:
    the refusal says why the inputs differ and how to keep that split."""
    folder = tmp_path / "many"
    write_samples(folder, n_per_kind=5, shape=(64, 64), seed=4)
    base = {"protocol": "s2s", "images": str(folder), "out": str(tmp_path / "b"),
            "methods": ["input"], "quality_metrics": ["psnr"], "settings": ["midpoint"]}  # fmt: skip
    run_benchmark(load_benchmark_config_dict({**base, "n_train": 10, "n_val": 2}), progress=False)
    with pytest.raises(ValueError, match=r"held images back .* set n_train and n_val"):
        run_benchmark(load_benchmark_config_dict(base), progress=False)
