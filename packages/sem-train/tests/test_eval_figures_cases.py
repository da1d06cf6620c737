"""Which cases a folder of the user's own images gets figures for, and how the figures of such a
folder tell the methods apart (audit D, findings 5 and 10)."""

from __future__ import annotations

import pytest
import yaml
from sem_physics import make_sample
from sem_physics.io import write_image
from sem_train.evaluation import load_benchmark_config, run_benchmark
from sem_train.evaluation import report as report_mod
from sem_train.evaluation.sources import list_images


@pytest.fixture
def fab_dir(tmp_path):
    """Two contact images sorted before one line/space image, as a user's folder might be."""
    folder = tmp_path / "fab"
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"a_contacts_{i}.tif", make_sample("contacts", (96, 128), seed=i))
    write_image(folder / "z_lines.tif", make_sample("lines", (96, 128), seed=5))
    return folder


def _config(tmp_path, fab_dir, **extra):
    cfg = {
        "protocol": "s2s",
        "images": str(fab_dir),
        "out": str(tmp_path / "bench"),
        "n_train": 0,
        "n_val": 0,
        "n_eval": 10,
        "settings": ["midpoint"],
        "methods": ["input"],
        "pixel_size_nm": 0.827,
        "metrology_convention": "truth",
        "quality_metrics": ["psnr", "ssim"],
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_benchmark_config(path)


def test_a_folder_of_own_images_gets_a_measured_case_and_its_edge_overlay(
    tmp_path, fab_dir, monkeypatch
):
    orders = []
    real = report_mod.save_edge_overlays

    def spy(path, case, images, measurements, **kw):
        orders.append(list(images))
        return real(path, case, images, measurements, **kw)

    monkeypatch.setattr(report_mod, "save_edge_overlays", spy)
    psd_calls = []
    real_psd = report_mod.save_psd_plot

    def psd_spy(path, title, curves, **kw):
        psd_calls.append((list(curves), kw))
        return real_psd(path, title, curves, **kw)

    monkeypatch.setattr(report_mod, "save_psd_plot", psd_spy)
    from sem_train.evaluation import figures

    legends = []
    real_save = figures._save

    def save_spy(fig, path):
        legends.append([ln.get_label() for ax in fig.axes for ln in ax.lines])
        return real_save(fig, path)

    monkeypatch.setattr(figures, "_save", save_spy)
    report = run_benchmark(_config(tmp_path, fab_dir), progress=False)
    out = report.parent
    panels = sorted(p.name for p in (out / "panels").iterdir())
    # the first file (a contact array: not measured) and the first measured line image
    assert panels == ["a_contacts_0_midpoint.png", "z_lines_midpoint.png"]
    assert [p.name for p in (out / "edges").iterdir()] == ["z_lines_midpoint.png"]
    text = report.read_text()
    assert "Figure cases (2): the first case of each image kind and setting" in text
    assert "line metrology measured (`z_lines@midpoint`)" in text
    # the edge overlay lists its tiles in the panels' order: input first, focused last
    assert orders and orders[0][0] == "defocused input" and orders[0][-1] == "focused"
    assert orders[0][1].startswith("control")
    # the PSD plot: the input before the control that equals it
    assert psd_calls
    assert psd_calls[0][0][:3] == ["focused", "defocused input", "control (y − b)/a"]
    # ... so the control, measured the same as the input, is named as drawn over it
    assert "control (y − b)/a (= defocused input, dotted)" in legends[-1]


def test_figure_images_names_the_cases_to_draw(tmp_path, fab_dir):
    report = run_benchmark(
        _config(tmp_path, fab_dir, figure_images=["a_contacts_1.tif", "z_lines"]), progress=False
    )
    out = report.parent
    assert sorted(p.name for p in (out / "panels").iterdir()) == [
        "a_contacts_1_midpoint.png",
        "z_lines_midpoint.png",
    ]
    assert "the images `figure_images` names: `a_contacts_1`, `z_lines`" in report.read_text()


def test_figure_images_errors_name_the_problem(tmp_path, fab_dir):
    with pytest.raises(ValueError, match=r"no evaluation image 'nope\.tif' \(images: a_contacts_0"):
        run_benchmark(_config(tmp_path, fab_dir, figure_images=["nope.tif"]), progress=False)
    assert not (tmp_path / "bench").exists()  # refused before the output folder is made
    with pytest.raises(ValueError, match="figure_images and figure_cases"):
        _config(tmp_path, fab_dir, figure_images=["z_lines"], figure_cases=2)
    with pytest.raises(ValueError, match="one or more image names"):
        _config(tmp_path, fab_dir, figure_images=[])


def test_the_psd_plot_shows_a_coinciding_control_and_tells_input_from_methods(
    tmp_path, monkeypatch
):
    from sem_metrology import measure_lines
    from sem_metrology.synthetic import make_line_image
    from sem_train.evaluation import figures

    a = measure_lines(make_line_image(6, (128, 192), seed=0).image, 0.827)
    b = measure_lines(make_line_image(6, (128, 192), seed=1).image, 0.827)
    c = measure_lines(make_line_image(6, (128, 192), seed=2).image, 0.827)
    assert a.valid and b.valid and c.valid
    # the control's PSD as the runner measures it: the same to ~1e-7 in every plotted bin,
    # its mean bin (0, not plotted) different
    near = b.model_copy(
        update={
            "psd_ler_nm3": [9.0, *(v * (1 + 3e-7) for v in b.psd_ler_nm3[1:])],
            "psd_lwr_nm3": [9.0, *(v * (1 - 3e-7) for v in b.psd_lwr_nm3[1:])],
        }
    )
    curves = {
        "focused": [a],
        "defocused input": [b],
        "control (y − b)/a": [near],
        "wiener": [c],
        "richardson-lucy": [a],
    }
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.save_psd_plot(tmp_path / "psd.png", "t", curves)
    for ax in drawn["fig"].axes:
        lines = {ln.get_label().split(" (=")[0]: ln for ln in ax.lines}
        ctrl, inp = lines["control (y − b)/a"], lines["defocused input"]
        # the control, equal to the input drawn before it, is dotted on top of it
        assert "(= defocused input, dotted)" in ctrl.get_label()
        assert ctrl.get_linestyle() != "-" and ctrl.get_zorder() > inp.get_zorder()
        assert "(= focused, dotted)" in lines["richardson-lucy"].get_label()
        colours = {n: ln.get_color() for n, ln in lines.items()}
        assert len({colours[n] for n in ("defocused input", "wiener", "control (y − b)/a")}) == 3
        assert colours["focused"] == "black"


def test_a_method_keeps_its_psd_colour_when_another_has_no_curve(tmp_path, monkeypatch):
    """The random setting's figure lacks a method the midpoint's has (refused there): with the
    styles of every setting's measurements, as the report passes them, every method keeps its
    colour in both figures."""
    from sem_metrology import measure_lines
    from sem_metrology.synthetic import make_line_image
    from sem_train.evaluation import figures

    ms = [measure_lines(make_line_image(6, (128, 192), seed=s).image, 0.827) for s in range(4)]
    refused = ms[0].model_copy(update={"valid": False})
    names = ("mrn", "zero-shot", "sem-foundation", "wiener-true-psf")
    per_figure = []
    for first in (ms[0], refused):
        curves = {"focused": [ms[3]], names[0]: [ms[1]], names[1]: [first]}
        per_figure.append(curves | {names[2]: [ms[2]], names[3]: [ms[3]]})
    every = {k: [m for c in per_figure for m in c[k]] for k in per_figure[0]}
    styles = figures.psd_styles(every)
    colours = []
    for curves in per_figure:
        drawn = {}
        monkeypatch.setattr(
            figures, "_save", lambda fig, path, d=drawn: d.setdefault("f", fig) and path
        )
        figures.save_psd_plot(tmp_path / "psd.png", "t", curves, styles=styles)
        ax = drawn["f"].axes[0]
        colours.append({ln.get_label().split(" (=")[0]: ln.get_color() for ln in ax.lines})
    assert names[1] not in colours[1]
    assert all(colours[0][n] == colours[1][n] for n in (names[0], names[2], names[3]))
    assert len({colours[0][n] for n in names}) == 4


def test_a_missing_relative_image_folder_says_what_it_is_relative_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotADirectoryError) as err:
        list_images("../shared/data/sem")
    text = str(err.value)
    assert "relative path is taken from the working directory" in text
    assert str(tmp_path / "../shared/data/sem") in text and "absolute path" in text
    with pytest.raises(NotADirectoryError) as err:
        list_images(tmp_path / "absent")
    assert "working directory" not in str(err.value)


def test_a_long_metric_message_is_written_once_and_coded_in_the_rows(
    tmp_path, fab_dir, monkeypatch
):
    import csv

    from sem_train.evaluation import quality

    long = "WeightsNotFoundError: LPIPS needs its weights, " + "fetch them first; " * 20

    def no_weights(out, ref):
        raise RuntimeError(long)

    monkeypatch.setitem(quality._FULL_REFERENCE, "lpips", no_weights)
    report = run_benchmark(
        _config(tmp_path, fab_dir, quality_metrics=["psnr", "lpips"]), progress=False
    )
    text = report.read_text()
    assert text.count(long) == 1 and "## Messages" in text
    assert "M1 (RuntimeError; the full message: Messages below)" in text
    with open(report.parent / "quality_per_image.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "errors" in rows[0] and "lpips" in rows[0]
    coded = [r["errors"] for r in rows if r["method"] != "focused"]
    assert coded and all(long not in e for e in coded)
    assert set(coded) == {"lpips: M1 (RuntimeError; the full message: report.md, section Messages)"}


def test_a_reused_result_without_a_new_figure_cases_output_says_why(tmp_path, fab_dir, monkeypatch):
    run_benchmark(
        _config(tmp_path, fab_dir, methods=["input", "wiener"], figure_images=["a_contacts_0"]),
        progress=False,
    )
    tiles = {}
    real = report_mod.save_panels

    def spy(path, case, ts, **kw):
        tiles[case.case_id] = {name: (img is None, note) for name, img, note in ts}
        return real(path, case, ts, **kw)

    monkeypatch.setattr(report_mod, "save_panels", spy)
    run_benchmark(
        _config(tmp_path, fab_dir, methods=["input", "wiener"], figure_images=["z_lines"]),
        progress=False,
    )
    missing, note = tiles["z_lines@midpoint"]["wiener"]
    assert missing and note.startswith("output not kept (result reused")


def test_figure_files_stay_distinct_after_sanitising_and_case_folding(tmp_path):
    """``Probe_µ0``/``Probe_ä0`` both sanitise to ``Probe__0``; ``Line``/``line`` are one file on
    Windows and macOS: each image keeps its own panel, and an unclashing name stays as it is."""
    folder = tmp_path / "imgs"
    for i, rel in enumerate(["a/Line.tif", "b/line.tif", "Probe_µ0.tif", "Probe_ä0.tif"]):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_image(folder / rel, make_sample("contacts", (96, 128), seed=i))
    report = run_benchmark(_config(tmp_path, folder, figure_cases=4), progress=False)
    panels = [p.name for p in (report.parent / "panels").iterdir()]
    assert len({p.casefold() for p in panels}) == 4
    assert {"Line_midpoint.png", "Probe__0_midpoint.png"} <= set(panels)
    linked = [ln for ln in report.read_text(encoding="utf-8").splitlines() if "panels/" in ln]
    assert len(set(linked)) == len(linked) == 4


def test_unique_names_keep_every_name_that_does_not_clash():
    from sem_train.evaluation.report import unique_names

    assert unique_names(["a", "A", "a_2"]) == {"a": "a", "A": "A_3", "a_2": "a_2"}
    assert unique_names(["a_2", "a", "A"]) == {"a_2": "a_2", "a": "a", "A": "A_3"}
    names = unique_names(["Probe_µ0", "Probe_ä0", "x"])
    assert names == {"Probe_µ0": "Probe__0", "Probe_ä0": "Probe__0_2", "x": "x"}


def test_a_method_without_any_measurement_takes_no_psd_colour():
    """mae-imagenet without weights measured nothing: the methods after it keep the colours
    they would have without it (the shipped model's is not pushed into a repeated colour)."""
    from types import SimpleNamespace

    from sem_train.evaluation.figures import psd_styles

    failed = SimpleNamespace(valid=False)
    with_empty = psd_styles({"focused": [1], "a": [1], "empty": [], "failed": [failed], "b": [1]})
    without = psd_styles({"focused": [1], "a": [1], "b": [1]})
    assert with_empty["b"] == without["b"] and with_empty["a"] == without["a"]
