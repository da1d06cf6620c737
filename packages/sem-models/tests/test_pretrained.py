"""Shipped models: found by name, or a one-line error naming the folder and the recipe."""

from __future__ import annotations

import pytest
import torch
from sem_models import RestorationModel, build_mae, load_model, save_model
from sem_models import pretrained as pretrained_mod
from sem_models.pretrained import SHIPPED_MODELS, ShippedModelMissingError, shipped_model_dir

ARCH = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}


def test_absent_model_names_its_folder_and_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path)
    for name in SHIPPED_MODELS:
        with pytest.raises(ShippedModelMissingError) as err:
            shipped_model_dir(name)
        text = str(err.value)
        assert str(tmp_path / name) in text and "model.safetensors" in text
        assert "--config cpu-base" in text and "\n" not in text
        assert isinstance(err.value, FileNotFoundError)
    # a folder with only the config is still missing its weights, and says which file
    (tmp_path / "sem-foundation").mkdir()
    (tmp_path / "sem-foundation" / "config.json").write_text("{}")
    with pytest.raises(ShippedModelMissingError, match=r"lacks model\.safetensors"):
        shipped_model_dir("sem-foundation")


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="sem-foundation-zero-shot"):
        shipped_model_dir("sem-fundation")


def test_installed_model_is_returned_and_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path)
    torch.manual_seed(0)
    model = RestorationModel(build_mae("tiny", in_chans=1, **ARCH), residual=True)
    save_model(model, tmp_path / "sem-foundation")
    folder = shipped_model_dir("sem-foundation")
    assert folder == tmp_path / "sem-foundation"
    again = load_model(folder)
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(again(x), model(x))


def test_the_wheel_packs_every_shipped_file_even_if_weights_are_git_ignored():
    """pyproject's hatch ``artifacts`` cover each shipped model's files (beside ``packages``)."""
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    import sem_models

    package = Path(sem_models.__file__).resolve().parent
    project = package.parent.parent
    build = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert build["targets"]["wheel"]["packages"] == ["src/sem_models"]
    for name in SHIPPED_MODELS:
        folder = (pretrained_mod._ROOT / name).relative_to(project)
        for file in ("config.json", "model.safetensors", "MODEL_CARD.md"):
            assert any(fnmatch(str(folder / file), glob) for glob in build["artifacts"]), file


@pytest.mark.parametrize("card_of", sorted(SHIPPED_MODELS))
def test_the_model_card_states_the_models_parameter_counts_and_file_sizes(card_of):
    """What a user counts (``sum(p.numel() for p in model.parameters())``) and what ``ls``
    shows, to the card's rounding; the files' fixed sin-cos position embeddings are no
    parameters (the card read 6.10 / 5.86 M, the tensor values of the files)."""
    import re

    text = (shipped_model_dir(card_of) / "MODEL_CARD.md").read_text(encoding="utf-8")
    stated = re.search(r"Parameters: ([\d.]+) M \(fine-tuned model\), ([\d.]+) M \(zero-shot", text)
    stored = re.search(
        r"position embeddings \(([\d.]+) M values\); stored in float16: ([\d.]+) MB and ([\d.]+) MB",
        text,
    )
    assert stated is not None
    params_ft, params_s3 = (float(v) for v in stated.groups())
    for name, params in (("sem-foundation", params_ft), ("sem-foundation-zero-shot", params_s3)):
        model = load_model(shipped_model_dir(name))
        count = sum(p.numel() for p in model.parameters())
        buffers = sum(b.numel() for b in model.buffers())
        assert round(count / 1e6, 2) == params, name
        assert stored is not None
        fixed, mb_ft, mb_s3 = (float(v) for v in stored.groups())
        mb = mb_ft if name == "sem-foundation" else mb_s3
        assert round(buffers / 1e6, 2) == fixed, name
        size = (shipped_model_dir(name) / "model.safetensors").stat().st_size
        assert round(size / 1e6, 1) == mb, name
