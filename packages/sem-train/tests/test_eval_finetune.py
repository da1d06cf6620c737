""" "finetune" methods in an evaluation: fine-tuned here on the protocol's training images.

``mae-imagenet`` is adapted from an external weights file (written here in timm's layout by a
real timm ViT) with the paper's fine-tuning protocol; ``sem-foundation`` is used as shipped or,
with ``finetune_here``, fine-tuned from the pretrained MAE + MoE. Tiny models and budgets: each
test takes seconds.
"""

from __future__ import annotations

import json
import os
from functools import partial

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sem_baselines import get_restorer, load_restorer, registry_entry
from sem_models import MoEConfig, RestorationModel, build_mae, moe_layers, save_model
from sem_models import pretrained as pretrained_mod
from sem_models.testing import MICRO_MAE
from sem_physics import ParameterRanges, degrade, make_sample
from sem_train.evaluation import FoundationConfig, finetune_network
from sem_train.evaluation.config import make_config
from sem_train.evaluation.methods import run_method
from sem_train.evaluation.protocols import Case, ProtocolManifest
from sem_train.evaluation.runner import method_hash

ARCH = MICRO_MAE
BUDGET = FoundationConfig(
    image_size_px=32, finetune_epochs=3, pairs_per_image=4, batch_size=4, lr=2e-3
)
TRAIN = [make_sample(k, (64, 64), seed=s) for k, s in (("lines", 1), ("contacts", 2))]
VAL = [make_sample(k, (64, 64), seed=s) for k, s in (("lines", 3), ("texture", 4))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cases() -> list[Case]:
    mid = ParameterRanges().midpoint()
    out = []
    for i, kind in enumerate(("lines", "texture")):
        ref = make_sample(kind, (48, 56), seed=10 + i)
        y = degrade(ref, mid, rng=i).astype(np.float32)
        out.append(Case(f"{kind}@midpoint", kind, kind, "midpoint", y, ref, None, mid))
    return out


def _psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - x.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _timm_weights(path) -> dict[str, torch.Tensor]:
    """A timm ViT's state dict (its ``model.safetensors`` layout, with a classifier head)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(3)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, str(path))
    return state


def _finetune():
    return partial(finetune_network, cfg=BUDGET, progress=False)


def _val_losses(run_dir) -> tuple[float, list[float]]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    return val[0]["loss"], [r["loss"] for r in val[1:]]


def test_mae_imagenet_is_adapted_with_the_fine_tuning_protocol(tmp_path):
    weights = tmp_path / "model.safetensors"
    state = _timm_weights(weights)
    cfg = {"weights_path": str(weights), "preset": "tiny", "overrides": ARCH, "device": "cpu"}
    cases = _cases()
    run = run_method(
        "mae-imagenet",
        cases,
        TRAIN,
        val_images=VAL,
        config=cfg,
        finetune=_finetune(),
        save_dir=tmp_path / "m",
    )
    assert run.failed is None and not run.case_errors, (run.failed, run.case_errors)
    assert any(n.startswith("fine-tuned here on 2 image(s), 3 epochs") for n in run.notes)
    plain = get_restorer("mae-imagenet", **cfg)  # not adapted: the residual head's identity
    adapted = load_restorer(tmp_path / "m")
    assert adapted.config.window_px == BUDGET.image_size_px
    a, p = adapted.network.mae.state_dict(), plain.network.mae.state_dict()
    # the encoder is still the file's (frozen), the decoder was trained
    for key in ("patch_embed.proj.weight", "blocks.1.mlp.fc1.weight", "norm.weight"):
        torch.testing.assert_close(a[key], state[key])
    for key in ("decoder_blocks.0.mlp.fc1.weight", "decoder_embed.weight", "decoder_pred.weight"):
        assert not torch.equal(a[key], p[key]), key
    # the fine-tune lowered its validation loss, and the adapted model moved off its input
    start, after = _val_losses(tmp_path / "m" / "finetuned" / "finetune")
    assert min(after) < start
    for c in cases:
        out = run.outputs[c.case_id]
        np.testing.assert_allclose(out, adapted.restore(c.input), atol=1e-3)
        np.testing.assert_allclose(plain.restore(c.input), np.clip(c.input, 0, 255), atol=0.05)
        assert _psnr(c.reference, out) > _psnr(c.reference, c.input) + 0.5


def test_a_finetune_method_without_trainer_or_images_fails_with_the_reason(tmp_path):
    weights = tmp_path / "model.safetensors"
    _timm_weights(weights)
    cfg = {"weights_path": str(weights), "preset": "tiny", "overrides": ARCH, "device": "cpu"}
    run = run_method("mae-imagenet", _cases(), TRAIN, config=cfg)
    assert "fine-tuned on the protocol's images; no trainer given" in run.failed
    run = run_method("mae-imagenet", _cases(), [], config=cfg, finetune=_finetune())
    assert "needs focused training images" in run.failed
    run = run_method("mae-imagenet", _cases(), TRAIN, config={}, finetune=_finetune())
    assert "--set mae-imagenet.weights_path=PATH" in " ".join(run.notes)


def _moe_mae(seed: int = 0):
    torch.manual_seed(seed)
    return build_mae("tiny", in_chans=1, moe=MoEConfig(num_experts=2), **ARCH)


def test_sem_foundation_is_fine_tuned_here_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path / "shipped")
    mae = _moe_mae()
    save_model(mae, tmp_path / "shipped" / "sem-foundation-zero-shot")
    tuned = RestorationModel(
        _moe_mae(seed=1), residual=True, refiner_width=4, guide_balances=(0.3,)
    )
    save_model(tuned, tmp_path / "shipped" / "sem-foundation")
    cases = _cases()
    common = {"val_images": VAL, "finetune": _finetune()}
    # default: the shipped fine-tuned model as it is (nothing trained, nothing saved)
    run = run_method("sem-foundation", cases, TRAIN, save_dir=tmp_path / "as-is", **common)
    assert run.failed is None and not any("fine-tuned here" in n for n in run.notes)
    assert not (tmp_path / "as-is").exists()
    shipped = get_restorer("sem-foundation")
    for c in cases:
        np.testing.assert_array_equal(run.outputs[c.case_id], shipped.restore(c.input))
    # finetune_here: from the shipped pretrained MAE + MoE, fine-tuned on the protocol's images
    run = run_method(
        "sem-foundation",
        cases,
        TRAIN,
        config={"finetune_here": True},
        save_dir=tmp_path / "here",
        **common,
    )
    assert run.failed is None, run.failed
    assert any("fine-tuned here" in n for n in run.notes)
    assert any("'sem-foundation-zero-shot' model shipped" in n for n in run.notes)
    net = load_restorer(tmp_path / "here").network
    assert moe_layers(net)
    # the shipped model's head (residual, refiner, physics guide), trained here
    assert (net.residual, net.refiner_width, tuple(net.guide_balances)) == (True, 4, (0.3,))
    ours, start = net.mae.state_dict(), mae.state_dict()
    gates = [k for k in ours if ".gate." in k and k.startswith("blocks.")]
    experts = [k for k in ours if ".experts." in k and k.startswith("blocks.")]
    assert gates and experts
    assert any(not torch.equal(ours[k], start[k]) for k in gates)  # routing trained
    for k in experts:  # encoder frozen
        torch.testing.assert_close(ours[k], start[k])
    assert any(not torch.equal(ours[k], start[k]) for k in ours if k.startswith("decoder"))


def test_a_fine_tune_here_keeps_the_head_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path / "shipped")
    save_model(_moe_mae(), tmp_path / "shipped" / "sem-foundation-zero-shot")
    tuned = RestorationModel(_moe_mae(seed=1), residual=True, refiner_width=4)
    save_model(tuned, tmp_path / "shipped" / "sem-foundation")
    # The shipped head on the pretrained MAE starts as the identity (its pretrained
    # reconstruction is no correction), as the recipe's fine-tune does.
    fresh = get_restorer("sem-foundation", finetune_here=True)
    assert fresh.network.residual
    assert not fresh.network.mae.decoder_pred.weight.any()
    x = _cases()[0].input
    np.testing.assert_allclose(fresh.restore(x), np.clip(x, 0, 255), atol=0.05)
    # The paper's head (the decoder predicts the focused image) stays direct through the
    # fine-tune instead of being turned into a residual one.
    run = run_method(
        "sem-foundation",
        _cases(),
        TRAIN,
        config={"finetune_here": True, "head": "paper"},
        val_images=VAL,
        finetune=_finetune(),
        save_dir=tmp_path / "paper",
    )
    assert run.failed is None, run.failed
    net = load_restorer(tmp_path / "paper").network
    assert (net.residual, net.refiner_width, net.guide_balances) == (False, 0, ())


def test_the_fine_tune_budget_keys_the_result_of_finetune_methods():
    cfg = make_config({"methods": ["input", "wiener", "mae-imagenet", "sem-foundation"]})
    longer = cfg.model_copy(update={"foundation": BUDGET})
    manifest = ProtocolManifest(protocol="s2s")
    for name in ("mae-imagenet", "sem-foundation"):
        assert registry_entry(name).fitting == "finetune"
        assert method_hash(name, cfg, manifest) != method_hash(name, longer, manifest)
    assert method_hash("wiener", cfg, manifest) == method_hash("wiener", longer, manifest)


def test_a_failed_method_is_rerun_once_its_model_is_installed(tmp_path, monkeypatch):
    """A stored failure (here: the shipped model not installed yet) is not reused."""
    from sem_train.evaluation import run_benchmark

    monkeypatch.setattr(pretrained_mod, "_ROOT", tmp_path / "shipped")
    cfg = make_config(
        {
            "out": str(tmp_path / "bench"),
            "generated": {"n_per_kind": 1, "shape": (64, 64)},
            "n_train": 1,
            "n_val": 0,
            "n_eval": 1,
            "settings": ["midpoint"],
            "methods": ["input", "sem-foundation"],
            "quality_metrics": ["psnr"],
            "figure_cases": 0,
        }
    )
    result = tmp_path / "bench" / "methods" / "sem-foundation" / "result.json"
    run_benchmark(cfg, progress=False)
    first = json.loads(result.read_text())
    assert "not installed" in first["failed"]
    os.utime(result, (0, 0))
    run_benchmark(cfg, progress=False)  # the same key, but a failure: run again
    again = json.loads(result.read_text())
    assert again["config_hash"] == first["config_hash"] and result.stat().st_mtime > 0
    save_model(RestorationModel(_moe_mae(), residual=True), tmp_path / "shipped" / "sem-foundation")
    run_benchmark(cfg, progress=False)
    second = json.loads(result.read_text())
    assert second["failed"] is None
    # the installed model's contents are part of the key: a later upgrade reruns the method
    assert second["config_hash"] != first["config_hash"]
    shipped = second["weights"]["sources"][0]
    assert shipped["shipped"] == "sem-foundation" and shipped["given"] is None
