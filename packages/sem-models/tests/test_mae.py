"""MAE mechanics: patches, masking, loss on masked patches only, position embeddings, overfitting."""

from __future__ import annotations

import math
import time

import pytest
import sem_models as sm
import torch
from sem_models.imaging import normalize
from sem_models.pos_embed import sincos_2d


def test_patchify_matches_a_loop_reference_and_round_trips_non_square(tiny_mae):
    x = torch.rand(2, 1, 24, 40)
    patches = tiny_mae.patchify(x)
    assert patches.shape == (2, 3 * 5, 64)
    # Patch (r, c), flattened row-major within the patch.
    for r in range(3):
        for c in range(5):
            ref = x[:, 0, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8].reshape(2, -1)
            assert torch.equal(patches[:, r * 5 + c], ref)
    assert torch.equal(tiny_mae.unpatchify(patches, (3, 5)), x)


def test_patchify_three_channels_channel_fastest():
    model = sm.build_mae("tiny", in_chans=3, img_size=32, patch_size=8)
    x = torch.rand(1, 3, 16, 16)
    p = model.patchify(x)
    assert torch.equal(p[0, 1].reshape(8, 8, 3).permute(2, 0, 1), x[0, :, :8, 8:])
    assert torch.equal(model.unpatchify(p), x)


@pytest.mark.parametrize("num_patches", [16, 196])
def test_masking_keeps_exactly_a_quarter_visible(num_patches):
    x = torch.randn(4, num_patches, 8)
    kept, mask, ids_restore = sm.MaskedAutoencoder.random_masking(x, 0.75)
    assert kept.shape == (4, num_patches // 4, 8)
    assert torch.equal(mask.sum(1), torch.full((4,), num_patches * 0.75))
    # Masks differ per sample, and the kept tokens are exactly the unmasked ones, in noise order.
    assert not all(torch.equal(mask[0], mask[i]) for i in range(1, 4))
    for i in range(4):
        assert torch.equal(kept[i].sort(0).values, x[i][mask[i] == 0].sort(0).values)
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(num_patches).expand(4, -1))


def test_decoder_puts_each_visible_token_back_at_its_patch_and_mask_tokens_elsewhere():
    """With the decoder's layers made identities, its token sequence shows the unshuffle: the
    encoded visible tokens at the patches random_masking kept, the mask token everywhere else."""
    from sem_models.testing import MICRO_MAE
    from torch import nn

    torch.manual_seed(0)
    arch = {**MICRO_MAE, "decoder_embed_dim": MICRO_MAE["embed_dim"]}
    m = sm.build_mae("tiny", in_chans=1, **arch).eval()
    m.decoder_embed, m.decoder_norm, m.decoder_pred = nn.Identity(), nn.Identity(), nn.Identity()
    m.decoder_blocks = nn.ModuleList()
    with torch.no_grad():
        m.decoder_pos_embed.zero_()
    n, grid, keep = 3, (4, 4), 4
    tokens = torch.randn(n, 16, m.config.embed_dim)
    kept, _, ids_restore = sm.MaskedAutoencoder.random_masking(tokens, 0.75)
    latent = torch.cat([torch.randn(n, 1, m.config.embed_dim), kept], dim=1)  # cls + visible
    with torch.no_grad():
        out = m.forward_decoder(latent, ids_restore, grid)
    for i in range(n):
        for j in range(16):
            # the patch's own token if it was kept, else the mask token
            match = (kept[i] == tokens[i, j]).all(-1)
            want = tokens[i, j] if match.any() else m.mask_token[0, 0]
            torch.testing.assert_close(out[i, j], want)
    assert (
        int(sum((kept[i][:, None] == tokens[i][None]).all(-1).sum() for i in range(n))) == n * keep
    )


def test_explicit_noise_keeps_the_patches_with_the_smallest_noise():
    x = torch.arange(8.0).reshape(1, 8, 1)
    noise = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5]])
    kept, mask, _ = sm.MaskedAutoencoder.random_masking(x, 0.5, noise)
    assert kept.flatten().tolist() == [1.0, 3.0, 5.0, 7.0]  # ascending noise order
    assert mask.tolist() == [[1, 0, 1, 0, 1, 0, 1, 0]]


def test_l1_loss_equals_independent_masked_mean(tiny_mae):
    x = torch.rand(2, 1, 32, 32)
    loss, pred, mask = tiny_mae(x)
    mean, std = 0.449, 0.226  # gray ViT-MAE statistics (mean of the RGB ones)
    target = tiny_mae.patchify((x - mean) / std)
    ref = ((pred - target).abs().mean(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-4)


def test_mse_norm_pix_loss_equals_independent_computation():
    torch.manual_seed(1)
    model = sm.build_mae("tiny", in_chans=3, img_size=32, patch_size=8, loss="mse_norm_pix")
    assert model.norm_pix_loss
    x = torch.rand(2, 3, 32, 32)
    loss, pred, mask = model(x)
    t = model.patchify(normalize(x))
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    ref = (((pred - t) ** 2).mean(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, ref)


def test_loss_ignores_visible_patches(tiny_mae):
    x = torch.rand(2, 1, 32, 32)
    _, pred, mask = tiny_mae(x)
    pred = pred.detach().requires_grad_(True)
    loss = tiny_mae.forward_loss(x, pred, mask)
    loss.backward()
    visible = mask == 0
    assert torch.all(pred.grad[visible] == 0)
    assert torch.all(pred.grad[~visible].abs().sum(-1) > 0)
    # Perturbing predictions of visible patches leaves the loss unchanged.
    changed = pred.detach().clone()
    changed[visible] += 10.0
    assert torch.equal(tiny_mae.forward_loss(x, changed, mask), loss.detach())


def test_sincos_position_embedding_closed_form():
    emb = sincos_2d(8, (3, 4))[0]  # (1 + 12, 8)
    assert torch.equal(emb[0], torch.zeros(8))
    r, c = 2, 3
    tok = emb[1 + r * 4 + c]
    w = [1.0, 1.0 / 100.0]  # 10000^(-i / (D/4)), D/4 = 2
    expect = [math.sin(c * w[0]), math.sin(c * w[1]), math.cos(c * w[0]), math.cos(c * w[1])]
    expect += [math.sin(r * w[0]), math.sin(r * w[1]), math.cos(r * w[0]), math.cos(r * w[1])]
    torch.testing.assert_close(tok, torch.tensor(expect))


def test_position_embeddings_follow_the_input_size(tiny_mae):
    # Built for 32 px (4x4 patches); a 48x64 input gets embeddings resampled to 6x8.
    x = torch.rand(1, 1, 48, 64)
    _, pred, mask = tiny_mae(x)
    assert pred.shape == (1, 48, 64) and mask.shape == (1, 48)
    assert tiny_mae._pos("pos_embed", (6, 8)).shape == (1, 1 + 48, tiny_mae.config.embed_dim)
    pe = tiny_mae._pos("pos_embed", (4, 4))
    assert torch.equal(pe, tiny_mae.pos_embed)  # same grid -> untouched
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_mae(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        tiny_mae(torch.rand(1, 3, 32, 32))


def test_tiny_mae_overfits_one_image_quickly():
    torch.manual_seed(0)
    model = sm.build_mae(
        "tiny",
        in_chans=1,
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
    )
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    img = (0.5 + 0.4 * torch.sin(xx / 2.0) * torch.cos(yy / 5.0))[None, None]
    noise = torch.rand(1, 16, generator=torch.Generator().manual_seed(0))  # one fixed mask
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    start = time.perf_counter()
    first = None
    for _ in range(300):
        loss, _, _ = model(img, noise=noise)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    final = model(img, noise=noise)[0].item()
    print(f"\noverfit: loss {first:.3f} -> {final:.4f} in {time.perf_counter() - start:.1f} s")
    assert final < first / 10


def test_random_masking_refuses_a_ratio_outside_0_to_1(tiny_mae):
    tokens = torch.rand(1, 16, 4)
    for ratio in (1.0, 1.5, -0.1, float("nan")):  # 1.5 kept 8 of 16 tokens, silently
        with pytest.raises(ValueError, match=rf"mask_ratio={ratio} must be in \[0, 1\)"):
            tiny_mae.random_masking(tokens, ratio)
