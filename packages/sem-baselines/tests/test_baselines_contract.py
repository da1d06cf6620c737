"""One contract for every registered restorer: shape, dtype, finiteness, range, determinism,
and (for learned ones) save/load round trip."""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baselines_testkit import MAE_METHODS, TINY, TINY_FIT, lines_image, mae_registry_config
from sem_baselines import (
    FitOptions,
    RestorerConfigError,
    check_image,
    get_restorer,
    list_restorers,
    load_restorer,
    registry_entry,
    restorer_config,
)
from sem_baselines.restorer import BUILTIN_MODULES
from sem_models.testing import number_fields
from sem_physics import ParameterRanges, SEMImage, degrade

# The same small degraded image for every method (odd sizes on purpose).
CLEAN = lines_image((40, 52), seed=3)
IMAGE = np.clip(degrade(CLEAN, ParameterRanges().midpoint(), rng=0), 0, 255)


def _build(name: str, tmp_path_factory: pytest.TempPathFactory | None = None):
    r = get_restorer(name, **TINY.get(name, {}), **_extra(name, tmp_path_factory))
    if hasattr(r, "fit"):
        r.fit([lines_image((64, 64), seed=s) for s in range(2)], seed=0, progress=False, **TINY_FIT)
    return r


def _extra(name: str, tmp_path_factory) -> dict:
    if name in MAE_METHODS:
        return mae_registry_config(name, tmp_path_factory)
    return {}


def test_registry_lists_every_baseline_of_the_paper():
    names = list_restorers()
    paper = ["input", "richardson-lucy", "wiener", "bm3d", "n2v", "n2n", "mrn"]
    assert names[: len(paper)] == paper
    assert set(MAE_METHODS) <= set(names)
    # the paper's Table 2 order: MAE-ImageNet, the ablation, ours zero-shot, ours few-shot
    assert [n for n in names if n in MAE_METHODS] == [
        "mae-imagenet",
        "mae-sem",
        "sem-foundation-zero-shot",
        "sem-foundation",
    ]


@pytest.mark.parametrize("name", list_restorers())
def test_restorer_contract(name, tmp_path, tmp_path_factory):
    r = _build(name, tmp_path_factory)
    out = r.restore(IMAGE)
    assert out.shape == IMAGE.shape
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert out.min() >= -1.0 and out.max() <= 256.0
    # restoring does not change the restorer: same input, same output (bm3d's compiled code
    # is multi-threaded and differs in the last float32 digits, hence the tolerance)
    np.testing.assert_allclose(r.restore(IMAGE), out, rtol=0, atol=1e-2)
    # a second restorer built (and trained) the same way gives the same output
    np.testing.assert_allclose(_build(name, tmp_path_factory).restore(IMAGE), out, atol=1e-2)
    if hasattr(r, "save"):
        r.save(tmp_path / "model")
        again = load_restorer(tmp_path / "model")
        assert type(again) is type(r)
        np.testing.assert_array_equal(again.restore(IMAGE), out)
        fresh = get_restorer(name, **TINY.get(name, {}), **_extra(name, tmp_path_factory))
        np.testing.assert_array_equal(fresh.load(tmp_path / "model").restore(IMAGE), out)
        # weights saved on a GPU machine load here: the device is the loader's, not the saver's
        cfg_file = tmp_path / "model" / "config.json"
        meta = json.loads(cfg_file.read_text())
        meta["config"]["device"] = "cuda:7"
        cfg_file.write_text(json.dumps(meta))
        np.testing.assert_array_equal(load_restorer(tmp_path / "model").restore(IMAGE), out)
        fresh = get_restorer(
            name, **{**TINY.get(name, {}), **_extra(name, tmp_path_factory), "device": "cpu"}
        )
        loaded = fresh.load(tmp_path / "model")
        assert loaded.config.device == "cpu" and loaded.device.type == "cpu"
        np.testing.assert_array_equal(loaded.restore(IMAGE), out)


@pytest.mark.filterwarnings("ignore:.*has no trained weights:UserWarning")
@pytest.mark.parametrize("name", list_restorers())
def test_restorer_rejects_bad_images(name, tmp_path_factory):
    r = get_restorer(name, **TINY.get(name, {}), **_extra(name, tmp_path_factory))
    with pytest.raises(ValueError, match="2-D"):
        r.restore(np.zeros((2, 8, 8), np.float32))
    bad = IMAGE.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        r.restore(bad)
    with pytest.raises(ValueError, match=r"beyond the 0\.\.255 grey scale"):
        r.restore(IMAGE * 257.0)  # 16-bit counts
    with pytest.raises(ValueError, match=r"SEMImage: pass its pixels, image\.data"):
        r.restore(SEMImage(IMAGE, Path("x.tif"), 1.0, "given", None, "uint8"))
    with pytest.warns(UserWarning, match=r"0\.\.255 grey levels"):
        r.restore(IMAGE / 255.0)


def test_bm3d_refuses_images_below_its_block_size_instead_of_crashing():
    r = get_restorer("bm3d")
    with pytest.raises(ValueError, match="at least 9 x 9 px"):
        r.restore(IMAGE[:8, :8])  # the bm3d package itself segfaults at 8 x 8
    assert r.restore(IMAGE[:9, :9]).shape == (9, 9)


@pytest.mark.parametrize("name", ["wiener", "richardson-lucy"])
def test_deconvolution_refuses_a_psf_larger_than_the_image(name):
    with pytest.raises(ValueError, match=r"PSF radius 60 px \(given\) exceeds the image"):
        get_restorer(name, psf={"rx_px": 60, "ry_px": 60}).restore(IMAGE)


def test_learned_restorers_warn_when_untrained_and_refuse_misplaced_fit_arguments(tmp_path):
    r = get_restorer("n2v", **TINY.get("n2v", {}))
    with pytest.warns(UserWarning, match="no trained weights"):
        r.restore(IMAGE)
    again = load_restorer(r.save(tmp_path / "n2v"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.restore(IMAGE)  # loaded: no warning
    with pytest.raises(TypeError, match="list of \\(H, W\\) arrays"):
        r.fit(np.stack([CLEAN, CLEAN]))
    with pytest.raises(TypeError, match="options must be a FitOptions, got dict"):
        r.fit([CLEAN], options={"epochs": 1})


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"restorer": "n2v", "config": [1, 2]}', "'config' must be a mapping"),
        ('{"restorer": "wiener", "config": {}}', "'wiener' has no saved weights"),
    ],
)
def test_a_broken_saved_restorer_folder_names_its_config_file(tmp_path, content, match):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(RestorerConfigError, match=match) as info:
        load_restorer(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_identity_returns_the_input():
    np.testing.assert_array_equal(get_restorer("input").restore(IMAGE), IMAGE)


def test_unknown_names_are_listed_once_in_order_with_the_registered_ones():
    from sem_baselines import list_restorers, unknown_restorers

    assert unknown_restorers(["wiener", "input"]) is None
    got = unknown_restorers(["b", "wiener", "a", "b"], noun="method", where="the list")
    assert got == "unknown methods 'b', 'a' in the list; available: " + ", ".join(list_restorers())


def test_registry_rejects_unknown_names_and_keys():
    with pytest.raises(RestorerConfigError, match="unknown restorer 'nope'"):
        get_restorer("nope")
    with pytest.raises(RestorerConfigError, match="iterations"):
        get_restorer("richardson-lucy", iterations=0)
    with pytest.raises(RestorerConfigError, match="tile_px=64 must exceed"):
        get_restorer("n2v", tile_px=64, margin_px=32)
    with pytest.raises(RestorerConfigError, match="balanse"):
        get_restorer("wiener", balanse=0.1)
    assert isinstance(RestorerConfigError("x"), ValueError)


@pytest.mark.parametrize("name", ["wiener", "richardson-lucy"])
def test_an_inverted_or_pedestal_shifted_image_is_refused_not_restored_to_zeros(name):
    """The deconvolutions returned all zeros (Richardson-Lucy a constant) for a negated image:
    more than half of the pixels below 0 is refused with the reason."""
    img = np.random.default_rng(1).uniform(20, 200, (64, 64)).astype(np.float32)
    restorer = get_restorer(name, psf={"rx_px": 2.0, "ry_px": 2.0})
    for bad in (-img, img - 250):
        with pytest.raises(ValueError, match=r"more than half of image is below 0"):
            restorer.restore(bad)
    slightly = img.copy()
    slightly[:3] = -4.0  # a few noise excursions of an unclipped simulation stay accepted
    assert np.isfinite(restorer.restore(slightly)).all()


@pytest.mark.parametrize("name", ["wiener", "richardson-lucy"])
def test_a_0_to_1_image_is_warned_about_once_per_restore(name):
    """check_image warns, and the blind estimate of the same image warned a second time."""
    from sem_physics.validation import UnitScaleWarning

    restorer = get_restorer(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restorer.restore(IMAGE / 255.0)
    scale = [w for w in caught if issubclass(w.category, UnitScaleWarning)]
    assert len(scale) == 1, [str(w.message) for w in scale]
    assert "0..255 grey levels are expected" in str(scale[0].message)


#: pydantic's error for a value that is no number, under the field it names
_NO_NUMBER = (
    r"\n{field}\n  Input should be [^\n]+ \[type=(int_type|float_type|literal_error), "
    r"input_value=True, input_type=bool\]"
)
#: the registry's one line for it: the setting, then its accepted range (or values)
_NO_NUMBER_LINE = (
    r": {field} must be (a number|an integer) (in [\[(]\S+, \S+[\])]|[<>]=? \S+), got True$"
    r"|: {field}: Input should be \d+(, \d+)*( or \d+)? \(got True\)$"
)


def _declared_bounds(field: Any) -> set[float]:
    """The gt/ge/lt/le numbers pydantic's FieldInfo ``field`` declares."""
    kinds = ("gt", "ge", "lt", "le")
    return {float(getattr(m, k)) for m in field.metadata for k in kinds if hasattr(m, k)}


@pytest.mark.parametrize("name", list(BUILTIN_MODULES))
def test_no_config_takes_a_bool_for_a_number(name):
    """pydantic's lax mode took ``iterations=True`` as one Richardson-Lucy iteration: every
    number setting of every built-in method refuses a bool with one line naming the setting
    and the range it accepts (its declared bounds, read here from the field), nested ones
    included; bool settings keep their bools."""
    config_cls = registry_entry(name).config_cls
    fields = number_fields(config_cls)
    for field in fields:
        with pytest.raises(RestorerConfigError, match=_NO_NUMBER_LINE.format(field=field)) as e:
            restorer_config(name, **{field: True})
        message = str(e.value)
        assert "\n" not in message and "validation error" not in message
        stated = message.rpartition(f"{field} must be ")[2].rpartition(", got")[0]
        numbers = {float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", stated)}
        bounds = sorted(_declared_bounds(config_cls.model_fields[field]))
        assert sorted(numbers) == pytest.approx(bounds, rel=1e-9), message
    flags = [n for n, f in config_cls.model_fields.items() if f.annotation is bool]
    for field in flags:
        assert getattr(restorer_config(name, **{field: False}), field) is False
    assert fields or name == "input"


@pytest.mark.parametrize(
    ("name", "config", "field"),
    [
        ("richardson-lucy", {"iterations": True}, "iterations"),
        ("wiener", {"psf": {"rx_px": True, "ry_px": 2.0}}, r"psf\.rx_px"),
        ("n2v", {"unet": {"depth": True}}, r"unet\.depth"),
        ("mrn", {"net": {"width": True}}, r"net\.width"),
        ("mae-imagenet", {"in_chans": True}, "in_chans"),
    ],
)
def test_a_bool_inside_a_setting_is_refused_where_it_is(name, config, field):
    with pytest.raises(RestorerConfigError, match=_NO_NUMBER_LINE.format(field=field)):
        get_restorer(name, **config)


#: ParameterRanges' error for a bool at an end of rx_px's range: its bounds (0, 1000]
_BOOL_IN_RANGE = (
    r"\n{field}\n  Value error, low and high must be numbers in \(0, 1000\], got \(True, 5\.0\)"
)


def test_the_fit_budget_takes_no_bool_for_a_number():
    from pydantic import ValidationError
    from sem_baselines.learned.training import FitConfig

    for model in (FitOptions, FitConfig):
        fields = number_fields(model)
        assert {"epochs", "batch_size", "seed", "steps_per_epoch"} <= set(fields)
        for field in fields:
            with pytest.raises(ValidationError, match=_NO_NUMBER.format(field=field)):
                model(**{field: True})
        with pytest.raises(ValidationError, match=_BOOL_IN_RANGE.format(field=r"ranges\.rx_px")):
            model(ranges={"rx_px": (True, 5.0)})
        assert model(progress=False).progress is False
    r = get_restorer("n2v", **TINY["n2v"])
    with pytest.raises(RestorerConfigError, match=_NO_NUMBER_LINE.format(field="epochs")):
        r.fit([CLEAN], epochs=True)


def _unit_scale_places(call) -> list[tuple[str, int]]:
    """(file, line) of each UnitScaleWarning that ``call()`` issues."""
    from sem_physics.validation import UnitScaleWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [(w.filename, w.lineno) for w in caught if issubclass(w.category, UnitScaleWarning)]


@pytest.mark.parametrize("name", list_restorers())
def test_a_0_to_1_image_warning_points_at_the_users_call(name, tmp_path_factory):
    """The UnitScaleWarning of a 0..1 image names the user's line (here: this file's lambda
    calling ``restore``, ``fit`` or check_image), not a line of the library, however deep the
    method calls check_image."""
    r = get_restorer(name, **TINY.get(name, {}), **_extra(name, tmp_path_factory))
    line = inspect.currentframe().f_lineno + 1
    assert _unit_scale_places(lambda: r.restore(IMAGE / 255.0)) == [(__file__, line)]
    if hasattr(r, "fit"):  # one warning per training image
        line = inspect.currentframe().f_lineno + 1
        got = _unit_scale_places(lambda: r.fit([CLEAN / 255.0] * 2, progress=False, **TINY_FIT))
        assert got == [(__file__, line)] * 2
    line = inspect.currentframe().f_lineno + 1
    assert _unit_scale_places(lambda: check_image(IMAGE / 255.0)) == [(__file__, line)]
