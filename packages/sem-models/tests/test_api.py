"""The public API that other packages build on: builders, upcycling, checkpoints, restoration."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch


def test_build_mae_rejects_unknown_override_naming_it():
    with pytest.raises(ValueError, match="bogus_field"):
        sm.build_mae("tiny", bogus_field=3)
    with pytest.raises(ValueError, match="unknown preset"):
        sm.build_mae("gigantic")
    with pytest.raises(ValueError, match="in_chans"):
        sm.build_mae("tiny", in_chans=2)


def test_forward_returns_loss_pred_mask_with_documented_shapes(tiny_mae):
    x = torch.rand(3, 1, 32, 32)
    loss, pred, mask = tiny_mae(x, mask_ratio=0.75)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (3, 16, 8 * 8 * 1)
    assert mask.shape == (3, 16)
    assert torch.equal(mask.sum(1), torch.full((3,), 12.0))


def test_upcycled_model_equals_dense_before_symmetry_breaking(tiny_mae):
    x = torch.rand(2, 1, 32, 32)
    noise = torch.rand(2, 16)
    tiny_mae.eval()
    with torch.no_grad():
        _, dense, _ = tiny_mae(x, noise=noise)
        sm.upcycle(tiny_mae, num_experts=4, placement="both", noise_std=0.0)
        _, moe, _ = tiny_mae(x, noise=noise)
    assert len(sm.moe_layers(tiny_mae)) == 3
    torch.testing.assert_close(moe, dense, rtol=1e-5, atol=1e-5)
    aux = sm.collect_aux_loss(tiny_mae)
    assert aux is not None and torch.isfinite(aux)


def test_noise_breaks_symmetry_between_expert_copies(tiny_mae):
    sm.upcycle(tiny_mae, num_experts=3, noise_std=0.01)
    for _, layer in sm.moe_layers(tiny_mae):
        for name in ("fc1", "fc2"):  # both weight matrices of every pair of copies
            w = [getattr(e, name).weight.detach() for e in layer.experts]
            for a, b in ((0, 1), (0, 2), (1, 2)):
                rel = float((w[a] - w[b]).std() / w[a].std())
                assert 0.005 < rel < 0.03, (name, a, b, rel)  # ~ sqrt(2) * 0.01


def test_freeze_all_but_gates_then_unfreeze(tiny_mae):
    sm.upcycle(tiny_mae, num_experts=2)
    sm.freeze_all_but_gates(tiny_mae)
    trainable = [n for n, p in tiny_mae.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("mlp.gate.weight") for n in trainable)
    assert len(trainable) == tiny_mae.config.depth
    sm.unfreeze_all(tiny_mae)
    assert all(p.requires_grad for p in tiny_mae.parameters())


@pytest.mark.parametrize("kind", ["mae", "moe", "restoration"])
def test_checkpoint_round_trip_rebuilds_same_class_and_outputs(tiny_mae, tmp_path, kind):
    model = tiny_mae
    if kind != "mae":
        sm.upcycle(model, num_experts=2, noise_std=0.05)
    if kind == "restoration":
        model = sm.RestorationModel(model, freeze_encoder=True)
    sm.save_model(model, tmp_path / "ck")
    again = sm.load_model(tmp_path / "ck")
    assert type(again) is type(model)
    x = torch.rand(2, 1, 32, 32)
    model.eval()
    again.eval()
    with torch.no_grad():
        if kind == "restoration":
            torch.testing.assert_close(again(x), model(x))
            assert not any(p.requires_grad for p in again.mae.blocks.parameters())
        else:
            noise = torch.rand(2, 16)
            torch.testing.assert_close(again(x, noise=noise)[1], model(x, noise=noise)[1])


def test_restoration_model_sees_all_patches_and_keeps_shape(tiny_mae):
    model = sm.RestorationModel(tiny_mae)
    x = torch.rand(2, 1, 40, 56)
    y = model(x)
    assert y.shape == x.shape
    # The encoder is frozen, the decoder trainable.
    assert not tiny_mae.patch_embed.proj.weight.requires_grad
    assert tiny_mae.decoder_pred.weight.requires_grad
    # Every output pixel depends on the input (no masked-out regions): perturb one corner.
    x2 = x.clone()
    x2[:, :, -8:, -8:] += 0.5
    assert (model(x2) - y).abs()[:, :, -8:, -8:].min() > 0


def test_gray_inputs_to_an_rgb_model_and_upcycling_a_restoration_model(tmp_path):
    torch.manual_seed(0)
    mae = sm.build_mae("tiny", in_chans=3, img_size=32, patch_size=8, embed_dim=32, depth=2,
                       num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)  # fmt: skip
    model = sm.RestorationModel(mae)
    x = torch.rand(2, 1, 32, 32)
    y = model(x)
    assert y.shape == x.shape
    # Gray in == the same image replicated to RGB, output averaged back to gray.
    torch.testing.assert_close(y, model(x.expand(-1, 3, -1, -1)).mean(1, keepdim=True))
    sm.upcycle(model, num_experts=2, noise_std=0.0)
    torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
    sm.save_model(model, tmp_path)
    assert sm.load_model(tmp_path).config.moe.num_experts == 2


def test_bf16_autocast_training_step_is_finite(tiny_mae):
    sm.upcycle(tiny_mae, num_experts=2, capacity_factor=1.25)
    x = torch.rand(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, _ = tiny_mae(x)
        assert pred.shape == (2, 16, 64)
        total = loss + 0.01 * sm.collect_aux_loss(tiny_mae)
    assert loss.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in tiny_mae.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    stats = sm.routing_stats(tiny_mae)
    assert 0 <= stats["mean/dropped_fraction"] < 1 and "blocks.0.mlp/routing_entropy" in stats


def test_residual_model_starts_as_the_identity_and_learns_away_from_it(tiny_mae, tmp_path):
    model = sm.RestorationModel(tiny_mae, residual=True).start_as_identity()
    x = torch.rand(2, 1, 40, 56)  # not a multiple of the patch: padding must crop back exactly
    torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)
    # The zeroed output layer still receives a gradient, so one step leaves the identity.
    loss = (model(x) - x.flip(-1)).abs().mean()
    loss.backward()
    assert tiny_mae.decoder_pred.weight.grad.abs().sum() > 0
    assert tiny_mae.patch_embed.proj.weight.grad is None  # encoder frozen
    with torch.no_grad():
        tiny_mae.decoder_pred.bias.add_(0.1)
    # A constant shift in normalised space is a shift of 0.1 * std (single channel) in [0, 1].
    std = sm.denormalize(torch.ones(1, 1, 1, 1)) - sm.denormalize(torch.zeros(1, 1, 1, 1))
    torch.testing.assert_close(model(x), x + 0.1 * std, rtol=0, atol=1e-5)
    # The flag survives a checkpoint round trip.
    sm.save_model(model, tmp_path / "ck")
    again = sm.load_model(tmp_path / "ck")
    assert again.residual
    torch.testing.assert_close(again(x), model(x))


def test_start_as_identity_refuses_a_direct_prediction_model(tiny_mae):
    with pytest.raises(ValueError, match="residual=True"):
        sm.RestorationModel(tiny_mae).start_as_identity()


def test_direct_restoration_gives_norm_pix_patches_their_statistics_back(tiny_mae, monkeypatch):
    """A norm-pix MAE predicts standardised patches. A decoder that predicts exactly the
    standardised patches of its input must give the input back on the [0, 1] scale."""
    torch.manual_seed(0)
    mae = sm.MaskedAutoencoder(tiny_mae.config.model_copy(update={"loss": "mse_norm_pix"}))
    model = sm.RestorationModel(mae, residual=False)
    x = torch.rand(2, 1, 32, 48)

    def perfect(latent, ids_restore, hw):
        return mae.target(x)  # standardised patches of the input, as norm-pix training asks

    monkeypatch.setattr(mae, "forward_decoder", perfect)
    torch.testing.assert_close(model(x), x, rtol=1e-4, atol=1e-4)
    # An MAE with the paper's L1 loss predicts plain normalised pixels: no statistics added.
    plain = sm.RestorationModel(tiny_mae, residual=False)
    monkeypatch.setattr(
        plain.mae, "forward_decoder", lambda *a: plain.mae.patchify(sm.normalize(x))
    )
    torch.testing.assert_close(plain(x), x, rtol=1e-5, atol=1e-5)
