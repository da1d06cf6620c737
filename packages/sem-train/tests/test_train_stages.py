"""Stages 1-3 and fine-tuning with a real (tiny) sem_models MAE on CPU: each runs a few steps
on generated SEM images, its loss falls, the right parameters change, and each stage starts
from the previous stage's exported model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sem_models
import torch
from safetensors.torch import load_file
from sem_models.masking import patch_noise, pixel_mask
from sem_train import modeling
from sem_train.config import load_config
from sem_train.engine import fit
from sem_train.finetune import build_finetune_task, finetune_datasets
from sem_train.stages import build_stage2_task, run_stage1, run_stage2, run_stage3

#: A few-thousand-parameter ViT-MAE: 16 patches of 8 px on 32 px inputs.
TINY = {
    "preset": "tiny",
    "overrides": {
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "decoder_embed_dim": 32,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
        "patch_size": 8,
    },
}


def _common(root: Path, out: Path, epochs: int = 3, lr: float = 2e-3) -> dict:
    return {
        "data": {"root": str(root), "image_size_px": 32, "val_fraction": 0.2, "channels": 1},
        "optim": {"lr": lr, "warmup_steps": 1},
        "run": {
            "epochs": epochs,
            "batch_size_per_process": 4,
            "device": "cpu",
            "progress": False,
            "tensorboard": False,
            "log_every_steps": 1,
            "output_dir": str(out),
        },
    }


def _records(run_dir: Path, split: str) -> list[dict]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["split"] == split]


def _falls(values: list[float], k: int = 2) -> bool:
    return sum(values[-k:]) / k < sum(values[:k]) / k


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, request):
    """A Stage-1 run on 15 generated images (shared by the tests of this module)."""
    base = tmp_path_factory.mktemp("stages")
    writer = request.getfixturevalue("folder_writer")
    root = base / "images"
    writer(root, 15, size=48, seed=1)
    cfg = load_config({**_common(root, base / "s1", epochs=6), "model": TINY}, "stage1")
    res = run_stage1(cfg)
    return base / "s1", root, res


def test_stage1_loss_falls_and_exports_the_best_model(stage1):
    s1, _, res = stage1
    train = [r["loss"] for r in _records(s1, "train")]
    val = [r["loss"] for r in _records(s1, "val")]
    assert len(train) == 18 and _falls(train, 3)
    assert val[-1] < val[0] and res.best_loss == pytest.approx(min(val), rel=1e-6)
    best = modeling.resolve_model_dir(s1)
    model = sem_models.load_model(best)
    assert isinstance(model, sem_models.MaskedAutoencoder) and model.patch_size == 8
    # Validation PSNR is measured on the [0, 1] composite: visible patches are exact, so it is
    # far above what a constant guess gives, and SSIM is a valid correlation.
    last = _records(s1, "val")[-1]
    assert last["psnr_db"] > 10 and -1 <= last["ssim"] <= 1
    for name in ("config.json", "run_info.json"):
        assert (s1 / name).is_file()


def test_validation_composite_is_exact_on_visible_patches(stage1):
    s1, root, _ = stage1
    from sem_train.data import SEMImageDataset, build_index
    from sem_train.losses import masked_l1
    from sem_train.stages import MAETask

    model = sem_models.load_model(modeling.resolve_model_dir(s1)).eval()
    task = MAETask(model, mask_ratio=0.75)
    ds = SEMImageDataset(build_index(root).paths()[:2], image_size_px=32, train=False)
    batch = {k: torch.stack([ds[(i, i)][k] for i in range(2)]) for k in ("image", "seed")}
    with torch.no_grad():
        imgs, _, hw, loss, pred, mask = task._forward(model, batch)
        _, composite, target = task.validation_step(model, batch)
    m = pixel_mask(model, mask, hw)
    assert torch.equal(target, imgs) and float(m.mean()) == 0.75
    assert torch.allclose(composite * (1 - m), imgs * (1 - m))
    # Masked pixels are the prediction mapped from the model's normalised space to [0, 1]:
    # normalising them again gives the prediction back, and the model's L1 loss equals the
    # masked L1 between the normalised composite and the normalised input.
    renorm = sem_models.normalize(composite)
    assert torch.allclose(renorm * m, model.unpatchify(pred, hw) * m, atol=1e-5)
    expect = masked_l1(renorm, sem_models.normalize(imgs), m)
    assert float(loss) == pytest.approx(float(expect), rel=1e-5)


def _routing_on(model, dataset, draws: int = 3) -> torch.Tensor:
    """Hard token fraction (layers, K) of ``model`` over every item of ``dataset`` and
    ``draws`` seeded masks each (evaluation mode, the stage's mask ratio)."""
    model.eval()
    counts = None
    with torch.no_grad():
        for d in range(draws):
            items = [dataset[(i, 500 + 37 * d + i)] for i in range(len(dataset))]
            imgs = torch.stack([it["image"] for it in items])
            seeds = torch.stack([it["seed"] for it in items])
            grid = (imgs.shape[-1] // model.patch_size) ** 2
            model(imgs, mask_ratio=0.75, noise=patch_noise(seeds, grid, imgs.device))
            c = torch.stack([m.sums["count"] for _, m in sem_models.moe_layers(model)])
            counts = c if counts is None else counts + c
    return counts / counts.sum(-1, keepdim=True)


def test_stage2_at_default_settings_uses_every_expert_and_lowers_its_objective(
    stage1, tmp_path, folder_writer
):
    """Default routing settings (calibrated routers, runner-up gradient, Switch balance term,
    copy noise, distillation): every expert of every layer receives >= 5 % of the tokens
    after Stage 2, the validation objective ends below its step-0 value, and only gates train."""
    s1, _, _ = stage1
    root = tmp_path / "images"  # at least the 64-px input after the info bar (none upscaled)
    folder_writer(root, 15, size=72, seed=1)
    body = _common(root, tmp_path / "s2", epochs=4)
    body["data"].update(
        image_size_px=64, val_fraction=0.5
    )  # 64 patches of 8 px: 17 routed tokens per image
    body["run"]["validate_at_start"] = True
    cfg2 = load_config({**body, "init_from": str(s1), "moe": {"num_experts": 4}}, "stage2")
    task = build_stage2_task(cfg2)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    gates = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert gates == set(modeling.gate_parameter_names(task.model)) and len(gates) == 2
    res2 = run_stage2(cfg2)
    after = load_file(str(res2.latest_checkpoint))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == gates, changed ^ gates
    train2 = _records(tmp_path / "s2", "train")
    per_expert = {f"blocks.{b}.mlp/{s}/{k}" for b in (0, 1) for s in ("token_fraction", "mean_prob") for k in range(4)}  # fmt: skip
    for r in train2:
        assert {"mae", "kd", "lb", "routing_entropy", "min_token_fraction"} <= set(r)
        assert per_expert <= set(r)
        assert sum(r[f"blocks.0.mlp/token_fraction/{k}"] for k in range(4)) == pytest.approx(1)
    val2 = _records(tmp_path / "s2", "val")
    assert val2[0]["step"] == 0 and len(val2) == 5
    assert val2[-1]["loss"] < val2[0]["loss"]  # the Stage-2 objective on fixed held-out masks
    from sem_train.data import SEMImageDataset, build_index

    train_items = SEMImageDataset(build_index(root).paths(), image_size_px=64, train=False)
    best = sem_models.load_model(res2.best_dir)
    fractions = _routing_on(best, train_items)
    assert fractions.shape == (2, 4) and float(fractions.min()) >= 0.05, fractions


def test_stage3_trains_everything_with_distillation(stage1, tmp_path):
    s1, root, _ = stage1
    cfg2 = load_config(
        {
            **_common(root, tmp_path / "s2", epochs=1),
            "init_from": str(s1),
            "moe": {"num_experts": 4},
        },
        "stage2",
    )
    res2 = run_stage2(cfg2)
    after = load_file(str(res2.latest_checkpoint))
    gates = set(modeling.gate_parameter_names(sem_models.load_model(res2.best_dir)))
    body = _common(root, tmp_path / "s3", epochs=4, lr=1e-3)
    body["run"]["validate_at_start"] = True
    cfg3 = load_config({**body, "init_from": str(tmp_path / "s2")}, "stage3")
    from sem_train.stages import build_stage3_task
    from sem_train.stages.stage3 import stage3_teacher_dir

    assert stage3_teacher_dir(cfg3) == modeling.resolve_model_dir(s1)  # found via Stage 2's run
    task3 = build_stage3_task(cfg3)
    teacher = sem_models.load_model(modeling.resolve_model_dir(s1))
    assert all(torch.equal(a, b) for a, b in zip(task3.teacher.state_dict().values(), teacher.state_dict().values(), strict=True))  # fmt: skip
    res3 = run_stage3(cfg3)
    after3 = load_file(str(res3.latest_checkpoint))
    changed3 = {k for k in after3 if not torch.equal(after[k], after3[k])}
    assert changed3 - gates and any(".experts." in k for k in changed3)
    train3 = _records(tmp_path / "s3", "train")
    assert all(r["fft"] > 0 and r["psd"] > 0 and r["kd"] > 0 for r in train3)
    assert _falls([r["loss"] for r in train3], 3)  # the Stage-3 objective, KD and spectra included
    # On held-out images the objective first rises: the distillation term is ~1e-4 at step 0
    # (student = teacher + routing) and grows as soon as the student leaves the teacher; it
    # falls again from there (not below its step-0 value within these 12 steps).
    val3 = [r["loss"] for r in _records(tmp_path / "s3", "val")]
    assert val3[-1] < val3[1]
    # Stage 3 exports an MoE model that Stage 3's successor (fine-tuning) can load.
    moe_model = sem_models.load_model(modeling.resolve_model_dir(tmp_path / "s3"))
    assert sem_models.moe_layers(moe_model)
    # Without a recorded or given teacher, a clear error (or kd_weight: 0).
    (tmp_path / "s2" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="teacher_from"):
        build_stage3_task(cfg3)
    assert build_stage3_task(cfg3.model_copy(update={"kd_weight": 0.0})).teacher is None


def test_finetune_trains_decoder_and_routing_with_a_frozen_encoder(stage1, tmp_path):
    s1, root, _ = stage1
    mae = sem_models.load_model(modeling.resolve_model_dir(s1))
    modeling.upcycle(mae, sem_models.MoEConfig(num_experts=2, noise_std=0.01))
    sem_models.save_model(mae, tmp_path / "moe_export")
    cfg = load_config(
        {
            **_common(root, tmp_path / "ft", epochs=4),
            "init_from": str(tmp_path / "moe_export"),
            "n_train_images": 2,
            "n_val_images": 2,
            "crop_sizes_px": [16, 32, 48],
            "pairs_per_image": 8,
            # PSF radii scaled to the 48-px test crops (the SPEC range reaches 30 px).
            "ranges": {"rx_px": [1.0, 4.0], "ry_px": [1.0, 4.0]},
        },
        "finetune",
    )
    task = build_finetune_task(cfg)
    train, val = finetune_datasets(cfg)
    assert len(train) == 16 and len(val) == 2 * cfg.val_pairs_per_image == 16
    # The run's seed fixes its initial weights, the refiner's included: a rerun starts alike.
    torch.rand(5)  # whatever the global generator did before
    with_refiner = cfg.model_copy(update={"refiner_width": 4})
    a = build_finetune_task(with_refiner).model.state_dict()
    torch.rand(7)
    b = build_finetune_task(with_refiner).model.state_dict()
    assert any(k.startswith("refiner.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    frozen = {n: p.clone() for n, p in task.model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("mae.blocks.") for n in frozen), "the encoder must be frozen"
    assert any(".gate." in n for n in trainable), "MoE routing must be trained"
    assert any(n.startswith("mae.decoder") for n in trainable)
    res = fit(task, train, val, cfg.run, cfg.optim)
    params = dict(task.model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert _falls([r["loss"] for r in _records(tmp_path / "ft", "train")], 3)
    restored = sem_models.load_model(res.best_dir)
    assert isinstance(restored, sem_models.RestorationModel)
    assert restored.residual  # the default: the decoder predicts the correction to the input


def test_residual_finetune_starts_at_the_input_and_resumes_from_its_own_weights(stage1):
    s1, _, _ = stage1
    mae = sem_models.load_model(modeling.resolve_model_dir(s1))
    x = torch.rand(2, 1, 48, 48)
    model = modeling.restoration_model(mae, freeze_encoder=True, train_routing=True)
    torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)
    with torch.no_grad():
        model.mae.decoder_pred.weight.normal_(0, 0.01)  # as after some training
    trained = model(x)
    again = modeling.restoration_model(model, freeze_encoder=True, train_routing=True)
    torch.testing.assert_close(again(x), trained)  # a residual model keeps its weights
    direct = modeling.restoration_model(mae, freeze_encoder=True, train_routing=True,
                                        residual=False)  # fmt: skip
    assert not direct.residual
    assert (direct(x) - x).abs().mean() > 1e-3  # the pretrained reconstruction head, not zeroed


def test_distillation_is_zero_when_the_student_is_the_teacher_with_the_same_masks():
    """Stage 2 starts from upcycled copies of the teacher's FFN (noise off here): the KD term
    compares the two on the same masked patches, so it must vanish (a different mask for the
    teacher gives ~0.3)."""
    import copy

    from sem_models.testing import MICRO_MAE
    from sem_train.stages.common import MAELossWeights, MAETask

    torch.manual_seed(0)
    student = sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE)
    teacher = copy.deepcopy(student)
    sem_models.upcycle(student, num_experts=2, noise_std=0.0)
    task = MAETask(student, mask_ratio=0.75, weights=MAELossWeights(kd=1.0), teacher=teacher)
    batch = {"image": torch.rand(4, 1, 32, 32), "seed": torch.tensor([3, 4, 5, 6])}
    student.eval()
    _, parts = task.training_loss(student, batch)
    assert float(parts["kd"]) < 1e-6 and float(parts["mae"]) > 1e-3


def _params_without_gradient(task, dataset) -> list[str]:
    """Trainable parameters that one training step leaves without a gradient (DDP with
    find_unused_parameters off, the default, fails on the next step when there is one)."""
    from torch.utils.data import default_collate

    batch = default_collate([dataset[(i, i)] for i in range(4)])
    task.model.train()
    loss, _ = task.training_loss(task.model, batch)
    loss.backward()
    return [n for n, p in task.trainable_parameters() if p.grad is None]


def test_every_trainable_parameter_of_every_stage_gets_a_gradient(stage1, tmp_path):
    """The premise of find_unused_parameters=False (the default): Stage 1, 2 and 3 and the
    guided, refined fine-tune give every trainable parameter a gradient, MoE experts
    included (an expert that receives no token still gets a zero one)."""
    from sem_train.stages import build_stage1_task, build_stage2_task, build_stage3_task
    from sem_train.stages.common import image_datasets

    s1, root, _ = stage1
    torch.manual_seed(0)
    cfg1 = load_config({**_common(root, tmp_path / "a"), "model": TINY}, "stage1")
    train1, _, _ = image_datasets(cfg1.data, tmp_path / "a")
    assert _params_without_gradient(build_stage1_task(cfg1), train1) == []
    for i, cf in enumerate([None, 0.25]):  # the loop dispatch; capacity (tokens dropped)
        moe = {"num_experts": 4, "top_k": 1, "capacity_factor": cf}
        body = {**_common(root, tmp_path / f"b{i}"), "init_from": str(s1), "moe": moe}
        task2 = build_stage2_task(load_config(body, "stage2"))
        for _, layer in sem_models.moe_layers(task2.model):
            layer.gate.weight.data[1:] = 0.0  # logits (w.h, 0, 0, 0): experts 2 and 3 idle
        assert _params_without_gradient(task2, train1) == []  # Stage 2 trains the gates
        export = tmp_path / f"moe_export{i}"
        sem_models.save_model(task2.model, export)
        body = {**_common(root, tmp_path / f"c{i}"), "init_from": str(export)}
        cfg3 = load_config({**body, "teacher_from": str(s1)}, "stage3")
        assert _params_without_gradient(build_stage3_task(cfg3), train1) == []  # experts too
        cfg_ft = load_config(
            {
                **_common(root, tmp_path / f"d{i}"),
                "init_from": str(export),
                "n_train_images": 2,
                "n_val_images": 2,
                "crop_sizes_px": [32],
                "pairs_per_image": 4,
                "ranges": {"rx_px": [1.0, 4.0], "ry_px": [1.0, 4.0]},
                "refiner_width": 4,
                "guide_balances": [0.03, 0.3, 3.0],
            },
            "finetune",
        )
        train_ft, _ = finetune_datasets(cfg_ft)
        assert _params_without_gradient(build_finetune_task(cfg_ft), train_ft) == []


def test_starved_experts_are_named_from_the_last_logged_step(tmp_path):
    """Stage 2 ends with a warning per MoE layer whose least-used expert got < 5 % of the
    tokens at the last logged training step (earlier steps and validation lines do not count)."""
    import json

    from sem_train.stages.stage2 import starved_experts

    lines = [
        {"split": "train", "step": 5, "blocks.0.mlp/min_token_fraction": 0.0},
        {
            "split": "train",
            "step": 10,
            "blocks.0.mlp/min_token_fraction": 0.2,
            "blocks.2.mlp/min_token_fraction": 0.01,
            "mean/min_token_fraction": 0.01,
        },
        {"split": "val", "step": 10, "blocks.0.mlp/min_token_fraction": 0.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert starved_experts(path) == [
        "routing: in blocks.2.mlp the least-used expert got 1.0% of the tokens at step 10 "
        f"(below 5%); see the per-expert fractions in {path}"
    ]
    assert starved_experts(path, share=0.005) == []
    assert starved_experts(tmp_path / "missing.jsonl") == []


def test_stages_with_distillation_train_in_fp32_where_bf16_would_drown_the_term(monkeypatch):
    """Stage 2 starts with the student almost the teacher: their difference lies below bf16's
    resolution, so under bf16 autocast the KD term is mostly rounding (measured here with CPU
    bf16); a task with a KD term therefore refuses bf16 autocast on CUDA, others keep it."""
    import copy

    from sem_models.testing import MICRO_MAE
    from sem_train.config import RunConfig
    from sem_train.engine import autocast_bf16
    from sem_train.stages.common import MAELossWeights, MAETask

    torch.manual_seed(0)
    student = sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE)
    teacher = copy.deepcopy(student)
    sem_models.upcycle(student, num_experts=2, noise_std=0.01)
    task = MAETask(student, mask_ratio=0.75, weights=MAELossWeights(kd=1.0), teacher=teacher)
    batch = {"image": torch.rand(8, 1, 32, 32), "seed": torch.arange(8)}
    student.eval()
    kd32 = float(task.training_loss(student, batch)[1]["kd"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kd16 = float(task.training_loss(student, batch)[1]["kd"])
    # the bf16 term is mostly rounding: 2.5x the true one here, 9x on a trained tiny model
    assert kd16 > 2 * kd32 > 0

    from sem_train import engine

    run, cuda = RunConfig(), torch.device("cuda")  # a device object: no GPU needed
    monkeypatch.setattr(engine, "native_bf16", lambda device: device.type == "cuda")
    assert not autocast_bf16(run, cuda, task) and "distillation" in task.fp32_reason
    plain = MAETask(sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE), mask_ratio=0.75)
    assert autocast_bf16(run, cuda, plain)
    assert not autocast_bf16(run, torch.device("cpu"), plain)
    assert not autocast_bf16(RunConfig(bf16=False), cuda, plain)
    monkeypatch.setattr(engine, "native_bf16", lambda device: False)  # a V100: emulated bf16
    assert not autocast_bf16(run, cuda, plain)


def test_seeds_stay_on_the_host_when_a_batch_moves_to_the_device():
    """Masks and pairs are drawn on the host from each sample's seed: a seed copied to a GPU
    would be copied straight back (a sync per step)."""
    from sem_train.engine import _to_device

    batch = {
        "image": torch.rand(2, 1, 8, 8),
        "seed": torch.tensor([1, 2]),
        "index": torch.tensor([0, 1]),
    }
    moved = _to_device(batch, torch.device("meta"))
    assert moved["image"].device.type == "meta"
    assert moved["seed"].device.type == "cpu" and moved["index"].device.type == "cpu"


def test_finetune_balance_term_reaches_the_routers_only_when_asked():
    """``lb_weight`` (the paper's fine-tune regulariser; 0 in the shipped recipe) adds the
    Stage-2 balance term while the routers train: it is logged and moves their gradient. The
    routers' token fractions are logged either way, as in the pretraining stages."""
    from sem_models.testing import MICRO_MAE
    from sem_train.config import LossConfig
    from sem_train.finetune import RestorationTask

    torch.manual_seed(0)
    mae = sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE)
    sem_models.upcycle(mae, num_experts=2, noise_std=0.01)
    model = modeling.restoration_model(mae, freeze_encoder=True, train_routing=True)
    with torch.no_grad():
        model.mae.decoder_pred.weight.normal_(0, 0.01)  # the routers then matter to the output
    batch = {"input": torch.rand(4, 1, 32, 32), "target": torch.rand(4, 1, 32, 32)}
    grads = []
    for weight in (0.0, 1.0):
        model.zero_grad()
        loss, parts = RestorationTask(model, LossConfig(), lb_weight=weight).training_loss(
            model, batch
        )
        loss.backward()
        gates = [p.grad.clone() for n, p in model.named_parameters() if n.endswith("gate.weight")]
        grads.append(torch.cat([g.ravel() for g in gates]))
        assert ("lb" in parts) == (weight > 0)
        assert 0 < float(parts["min_token_fraction"]) <= 0.5 <= float(parts["max_token_fraction"])
    assert not torch.allclose(grads[0], grads[1])


def test_a_dense_model_with_a_balance_weight_validates_without_a_balance_term():
    """The dense ablation's Stage 3 keeps lb_weight 0.01 and has no MoE layer: its validation
    has no balance term (it failed on an empty list of token sums)."""
    from sem_models.testing import MICRO_MAE
    from sem_train.stages.common import MAELossWeights, MAETask

    torch.manual_seed(0)
    dense = sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE).eval()
    batch = {"image": torch.rand(2, 1, 32, 32), "seed": torch.tensor([1, 2])}
    task = MAETask(dense, mask_ratio=0.75, weights=MAELossWeights(lb=0.01))
    plain = MAETask(dense, mask_ratio=0.75)
    task.validation_begin()
    loss, _, _ = task.validation_step(dense, batch)
    assert task.validation_end(lambda t: t) == 0.0
    torch.testing.assert_close(loss, plain.validation_step(dense, batch)[0])


def test_a_single_process_run_takes_the_first_gpu_whatever_rank_the_environment_names(
    monkeypatch,
):
    from sem_train.distributed import env_local_rank

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")
    assert env_local_rank() == 0  # no process group: RANK left over from elsewhere
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert env_local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_local_rank() == 1
