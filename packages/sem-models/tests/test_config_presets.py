"""Presets on the meta device: architecture shapes and parameter counts, no weights allocated."""

from __future__ import annotations

import numpy as np
import pytest
import sem_models as sm
import torch
from sem_models.testing import number_fields

# (embed_dim, depth, num_heads, patch) of the standard ViT sizes; decoder per MAE.
EXPECTED = {
    "small": (384, 12, 6, 16),
    "base": (768, 12, 12, 16),
    "large": (1024, 24, 16, 16),
    "huge": (1280, 32, 16, 14),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(sm.PRESETS))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_preset_builds_on_meta_and_forward_shapes(preset, in_chans):
    model = sm.build_mae(preset, device="meta", in_chans=in_chans)
    cfg = model.config
    assert all(p.device.type == "meta" for p in model.parameters())
    x = torch.empty(2, in_chans, cfg.img_size, cfg.img_size, device="meta")
    loss, pred, mask = model(x)
    n_patches = (cfg.img_size // cfg.patch_size) ** 2
    assert pred.shape == (2, n_patches, cfg.patch_size**2 * in_chans)
    assert mask.shape == (2, n_patches) and loss.shape == ()
    assert model.patch_embed.proj.weight.shape == (
        cfg.embed_dim,
        in_chans,
        cfg.patch_size,
        cfg.patch_size,
    )
    if preset in EXPECTED:
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == EXPECTED[preset]
    if preset in ("base", "large", "huge"):
        assert (cfg.decoder_embed_dim, cfg.decoder_depth) == (512, 8)


def test_large_matches_the_paper_and_vit_l_parameter_count():
    model = sm.build_mae("large", device="meta")
    cfg = model.config
    assert (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.patch_size, cfg.img_size) == (
        24,
        1024,
        16,
        16,
        224,
    )
    encoder = sum(p.numel() for p in model.encoder_parameters())
    # ViT-L/16 encoder without classifier head: 303.3 M parameters (timm's count).
    assert abs(encoder - 303.3e6) < 0.5e6


def test_large_with_eight_encoder_experts_is_about_1p7_billion_parameters():
    dense = _count(sm.build_mae("large", device="meta"))
    moe = _count(sm.build_mae("large", device="meta", moe={"num_experts": 8}))
    decoder_only = _count(
        sm.build_mae("large", device="meta", moe={"num_experts": 8, "placement": "decoder"})
    )
    print(
        f"\nlarge dense {dense / 1e9:.3f} B, +8 experts encoder {moe / 1e9:.3f} B, decoder {decoder_only / 1e9:.3f} B"
    )
    # 24 FFNs of 2*1024*4096 + 4096 + 1024 params, 7 extra copies each, plus 24 routers.
    ffn = 2 * 1024 * 4096 + 4096 + 1024
    assert moe - dense == 24 * (7 * ffn + 1024 * 8)
    assert 1.65e9 < moe < 1.8e9  # paper: "about 1.7 B"
    assert 0.4e9 < decoder_only < 0.5e9  # about 0.45 B with experts in the decoder only


def test_upcycle_on_meta_gives_the_same_architecture_as_building_with_moe():
    moe = {"num_experts": 4, "every_n": 2, "noise_std": 0.0}  # the config records the noise
    built = sm.build_mae("base", device="meta", moe=moe)
    up = sm.upcycle(sm.build_mae("base", device="meta"), num_experts=4, every_n=2, noise_std=0)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(built) == shapes(up)
    assert up.config == built.config
    assert [n for n, _ in sm.moe_layers(up)] == [f"blocks.{i}.mlp" for i in (1, 3, 5, 7, 9, 11)]


def test_invalid_configs_name_the_field():
    with pytest.raises(ValueError, match="patch_size"):
        sm.build_mae("tiny", img_size=30)
    with pytest.raises(ValueError, match="top_k"):
        sm.MoEConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="extra"):
        sm.MoEConfig(num_expert=2)


@pytest.mark.parametrize(
    "moe",
    [
        {"capacity_factor": float("inf")},  # an OverflowError deep in the first forward
        {"noise_std": float("inf")},  # upcycling gave experts of NaN weights
        {"z_loss_weight": float("inf")},
    ],
)
def test_infinite_moe_settings_are_refused_by_name(moe):
    (field,) = moe
    with pytest.raises(ValueError, match=rf"{field}\n.*finite number"):
        sm.MoEConfig(num_experts=2, **moe)
    with pytest.raises(sm.ModelConfigError, match=rf"{field}\n.*finite number"):
        sm.upcycle(sm.build_mae("tiny", device="meta"), num_experts=2, **moe)
    with pytest.raises(ValueError, match=r"capacity_factor=nan must be finite and > 0"):
        sm.MoEMlp(8, num_experts=2, capacity_factor=float("nan"))
    with pytest.raises(sm.ModelConfigError, match=r"mlp_ratio\n.*finite number"):
        sm.build_mae("tiny", device="meta", mlp_ratio=float("inf"))


def test_an_moe_stride_that_selects_no_block_is_refused_not_built_dense():
    # config.moe set and not one MoE layer: the checkpoint would claim MoE and hold none
    with pytest.raises(sm.ModelConfigError, match=r"every_n=7 .* 6-block encoder.* 1\.\.6"):
        sm.build_mae("tiny", device="meta", moe={"num_experts": 2, "every_n": 7})
    with pytest.raises(sm.ModelConfigError, match=r"every_n=3 .* 2-block decoder"):
        sm.build_mae("tiny", device="meta", moe={"every_n": 3, "placement": "both"})
    with pytest.raises(sm.ModelConfigError, match=r"every_n=7 .* 6-block encoder"):
        sm.upcycle(sm.build_mae("tiny", device="meta"), num_experts=2, every_n=7)
    up = sm.upcycle(sm.build_mae("tiny", device="meta"), num_experts=2, every_n=6)
    assert [n for n, _ in sm.moe_layers(up)] == ["blocks.5.mlp"]  # the deepest stride works


@pytest.mark.parametrize(
    ("model", "some"),
    [
        (sm.MoEConfig, {"num_experts", "top_k", "every_n", "capacity_factor", "noise_std"}),
        (sm.MAEConfig, {"img_size", "in_chans", "depth", "mlp_ratio", "mask_ratio"}),
    ],
)
@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_no_number_field_takes_a_bool(model, some, flag):
    """pydantic's lax mode took ``num_experts=True`` as one expert and ``in_chans=True`` as one
    channel: every number field refuses a bool with pydantic's own error for a value that is
    no number, naming the field; a bool field keeps its bools."""
    from pydantic import ValidationError

    fields = number_fields(model)
    assert some <= set(fields)
    for name in fields:
        with pytest.raises(ValidationError) as err:
            model(**{name: flag})
        (error,) = err.value.errors()
        assert error["loc"] == (name,) and error["input"] is flag
        assert error["type"] in ("int_type", "float_type", "literal_error")
    assert sm.MAEConfig(qkv_bias=flag).qkv_bias is bool(flag)


def test_a_bool_for_a_number_is_refused_through_every_entry_point():
    with pytest.raises(ValueError, match=r"in_chans\n.*Input should be 1 or 3 .*input_value=True"):
        sm.MAEConfig(in_chans=True)
    with pytest.raises(ValueError, match=r"moe\.top_k\n.*valid integer"):
        sm.MAEConfig(moe={"top_k": True})
    with pytest.raises(sm.ModelConfigError, match=r"mask_ratio\n.*valid number"):
        sm.mae_config("tiny", mask_ratio=True)
    with pytest.raises(sm.ModelConfigError, match=r"num_experts\n.*valid integer"):
        sm.upcycle(sm.build_mae("tiny", device="meta"), num_experts=True)
    assert sm.MoEConfig(num_experts=2, top_k=1).num_experts == 2  # numbers still pass


def test_bools_given_for_numbers_looks_inside_tuples_lists_and_mappings():
    from typing import Literal

    from sem_models.config import bools_given_for_numbers as found

    assert [e["loc"] for e in found((1.0, True), tuple[float, float])] == [(1,)]
    assert [e["loc"] for e in found([True, 2, False], list[int])] == [(0,), (2,)]
    assert [e["loc"] for e in found({"a": 1, "b": True}, dict[str, float])] == [("b",)]
    assert [e["type"] for e in found(True, Literal[1, 3] | None)] == ["literal_error"]
    assert found(True, int | bool) == [] and found(True, bool) == [] and found(True, str) == []
    assert found((1, 2.5), tuple[int, ...]) == [] and found(None, float | None) == []


def test_the_readme_preset_table_states_each_presets_parameters_gray_and_rgb():
    """The table mixed gray counts (tiny 3.2 M, small 24.7 M) with RGB ones (large 329 M, huge
    656 M); each row now states both, to the digits it gives."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `(\w+)`[^|]*\|[^|]*\|[^|]*\|[^|]*\| ([\d.]+) / ([\d.]+) M", readme, re.M
    )
    assert sorted(name for name, *_ in rows) == sorted(sm.PRESETS)
    for name, gray, rgb in rows:
        for in_chans, stated in ((1, gray), (3, rgb)):
            count = _count(sm.build_mae(name, device="meta", in_chans=in_chans)) / 1e6
            digits = len(stated.split(".")[1]) if "." in stated else 0
            assert round(count, digits) == float(stated), (name, in_chans, count)
