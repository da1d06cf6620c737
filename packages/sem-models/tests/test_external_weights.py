"""External MAE weights from local files: both public layouts, conversions, errors."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch
from safetensors.torch import save_file
from sem_models.imaging import normalize
from sem_models.testing import MICRO_MAE

ARCH = MICRO_MAE


def _mae(in_chans=3, seed=0, **kw) -> sm.MaskedAutoencoder:
    torch.manual_seed(seed)
    return sm.build_mae("tiny", in_chans=in_chans, **{**ARCH, **kw}).eval()


def _encoder_state(model: sm.MaskedAutoencoder) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith(("decoder", "mask_token"))
    }


def _latent(model, x):
    with torch.no_grad():
        return model.forward_encoder(normalize(x), 0.0)[0]


def test_facebookresearch_layout_encoder_only(tmp_path):
    src = _mae(seed=1)
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": _encoder_state(src)}, path)
    dst = _mae(seed=2)
    report = sm.load_external_mae(path, dst)
    assert "blocks.0.attn.qkv.weight" in report.loaded
    assert "decoder_pred.weight" in report.missing and not report.ignored
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(_latent(dst, x), _latent(src, x))


def test_facebookresearch_layout_with_decoder_reproduces_the_whole_model(tmp_path):
    src = _mae(seed=1)
    path = tmp_path / "mae_visualize_vit_tiny.pth"
    torch.save({"model": src.state_dict(), "epoch": 0}, path)
    dst = _mae(seed=2)
    report = sm.load_external_mae(path, dst)
    assert report.missing == []
    x, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(dst(x, noise=noise)[1], src(x, noise=noise)[1])


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_timm_layout_with_head_and_fc_norm(tmp_path, fmt):
    src = _mae(seed=1)
    state = {"module." + k: v for k, v in _encoder_state(src).items()}
    state["fc_norm.weight"] = torch.ones(32)
    state["head.weight"] = torch.zeros(1000, 32)
    path = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    dst = _mae(seed=2)
    report = sm.load_external_mae(path, dst)
    assert sorted(report.ignored) == ["fc_norm.weight", "head.weight"]
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(_latent(dst, x), _latent(src, x))


def test_rgb_patch_embedding_converted_exactly_for_gray_inputs(tmp_path):
    src = _mae(seed=1)
    path = tmp_path / "mae.pth"
    torch.save({"model": src.state_dict()}, path)
    gray = _mae(in_chans=1, seed=2)
    report = sm.load_external_mae(path, gray)
    assert "patch_embed.proj" in report.converted and "decoder_pred" in report.converted
    g = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(
        _latent(gray, g), _latent(src, g.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5
    )
    # The pixel head predicts the gray value that the RGB head's channel mean would give.
    noise = torch.rand(2, 16)
    with torch.no_grad():
        rgb = src.unpatchify(src(g.expand(-1, 3, -1, -1), noise=noise)[1])
        one = gray.unpatchify(gray(g, noise=noise)[1])
    rgb01 = sm.denormalize(rgb).mean(1, keepdim=True)
    torch.testing.assert_close(sm.denormalize(one), rgb01, rtol=1e-4, atol=1e-4)


def _smooth_field(n: int, dim: int) -> torch.Tensor:
    """``(1, 1 + n*n, dim)``: a cls row of ones, then a smooth, anisotropic field sampled at
    the centres of an n x n grid on the unit square (channel c varies as sin/cos of y and x)."""
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    freq = 0.3 + 0.4 * torch.arange(dim, dtype=torch.float64) / dim
    grid = torch.sin(torch.pi * freq * (2 * y[..., None] - 1)) + 0.5 * torch.cos(
        torch.pi * freq * x[..., None]
    )
    return torch.cat([torch.ones(1, dim, dtype=torch.float64), grid.reshape(n * n, dim)])[None]


def test_position_embeddings_resampled_for_another_input_size(tmp_path):
    """A 6x6 grid's embeddings, read into a 4x4 model, are the same field at the new cells'
    centres (both encoder and decoder), with the cls row kept as it is."""
    src = _mae(seed=1, img_size=48)  # 6x6 grid
    state = src.state_dict()
    for key in ("pos_embed", "decoder_pos_embed"):
        state[key] = _smooth_field(6, state[key].shape[-1]).float()
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    dst = _mae(seed=2)  # 4x4 grid
    report = sm.load_external_mae(path, dst)
    assert {"pos_embed", "decoder_pos_embed"} <= set(report.converted)
    for key in ("pos_embed", "decoder_pos_embed"):
        got = getattr(dst, key).detach().double()
        want = _smooth_field(4, got.shape[-1])
        assert got.shape == want.shape
        torch.testing.assert_close(got[:, 0], want[:, 0])  # cls row untouched
        err = (got[:, 1:] - want[:, 1:]).abs().max().item()
        assert err < 0.06, f"{key}: resampled field off by {err:.3f}"


def test_moe_model_gets_the_dense_ffn_in_every_expert(tmp_path):
    src = _mae(seed=1)
    path = tmp_path / "mae.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = sm.build_mae("tiny", in_chans=3, moe={"num_experts": 3}, **ARCH).eval()
    sm.load_external_mae(path, dst)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(_latent(dst, x), _latent(src, x), rtol=1e-5, atol=1e-5)


def test_shape_mismatch_names_the_key(tmp_path):
    path = tmp_path / "mae.pth"
    torch.save({"model": _mae(embed_dim=64).state_dict()}, path)
    with pytest.raises(sm.ExternalWeightsError, match=r"patch_embed\.proj\.weight|cls_token"):
        sm.load_external_mae(path, _mae())


def test_missing_file_names_the_file_and_where_to_get_it(tmp_path):
    path = tmp_path / "mae_pretrain_vit_large.pth"
    with pytest.raises(sm.MissingWeightsError) as info:
        sm.load_external_mae(path, _mae())
    msg = str(info.value)
    assert str(path) in msg and "dl.fbaipublicfiles.com" in msg and "offline" in msg


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Payload()}, path)
    with pytest.raises(sm.ExternalWeightsError, match="weights-only") as info:
        sm.load_external_mae(path, _mae())
    # the reason, never torch's advice to load it with weights_only=False
    assert "never unpickled" in str(info.value) and "False" not in str(info.value)


def test_unrelated_file_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(sm.ExternalWeightsError, match="encoder tensors missing"):
        sm.load_external_mae(path, _mae())


def _to_transformers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write our weights under Hugging Face ViTMAEForPreTraining names (test-side inverse)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] in ("blocks", "decoder_blocks"):
            base = (
                "vit.encoder.layer." if parts[0] == "blocks" else "decoder.decoder_layers."
            ) + parts[1]
            rest = ".".join(parts[2:])
            if rest.startswith("attn.qkv."):
                for name, chunk in zip(("query", "key", "value"), v.chunk(3, dim=0), strict=True):
                    out[f"{base}.attention.attention.{name}.{parts[-1]}"] = chunk.clone()
                continue
            hf = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
                  "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}  # fmt: skip
            module = rest.rsplit(".", 1)[0]
            out[f"{base}.{hf[module]}.{parts[-1]}"] = v
        elif k.startswith("decoder_"):
            out["decoder." + k] = v
        else:
            top = {"cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings",
                   "mask_token": "decoder.mask_token", "norm.weight": "vit.layernorm.weight",
                   "norm.bias": "vit.layernorm.bias",
                   "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
                   "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias"}  # fmt: skip
            out[top[k]] = v
    return out


def _assert_loads_as(src, tensors, tmp_path) -> None:
    """``tensors`` saved as a file load into a fresh MAE with nothing missing or ignored, and
    it predicts as ``src`` does."""
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    dst = _mae(seed=2)
    report = sm.load_external_mae(path, dst)
    assert report.missing == [] and report.ignored == []
    x, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(dst(x, noise=noise)[1], src(x, noise=noise)[1])


def test_transformers_vitmae_layout_reproduces_the_whole_model(tmp_path):
    src = _mae(seed=1)
    hf = _to_transformers_layout(src.state_dict())
    assert "vit.encoder.layer.1.attention.attention.key.bias" in hf
    _assert_loads_as(src, hf, tmp_path)


def _to_transformers5_names(hf: dict[str, torch.Tensor], saved: bool) -> dict[str, torch.Tensor]:
    """The Hub names above as transformers 5 writes them: its modules' ``state_dict()``
    (``vit.layers.i.attention.q_proj``, ``o_proj``, ``mlp.fc1``), or its ``save_pretrained``
    files (the Hub names, but ``decoder.decoder_encoder.layer.i`` for the decoder layers)."""
    if saved:
        return {k.replace("decoder.decoder_layers.", "decoder.decoder_encoder.layer."): v
                for k, v in hf.items()}  # fmt: skip
    rename = [("vit.encoder.layer.", "vit.layers."), ("attention.attention.query", "attention.q_proj"),
              ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
              ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
              ("output.dense", "mlp.fc2")]  # fmt: skip
    out = {}
    for k, v in hf.items():
        for old, new in rename:
            k = k.replace(old, new)
        out[k] = v
    return out


@pytest.mark.parametrize("saved", [False, True])
def test_transformers5_names_reproduce_the_whole_model(tmp_path, saved):
    """Before, the modules' names were refused ("encoder tensors missing") and the saved files'
    decoder layers ignored: a full model loaded with a randomly initialised decoder."""
    src = _mae(seed=1)
    hf = _to_transformers5_names(_to_transformers_layout(src.state_dict()), saved)
    assert ("decoder.decoder_encoder.layer.0.output.dense.bias" in hf) == saved
    assert ("vit.layers.1.attention.k_proj.bias" in hf) != saved
    _assert_loads_as(src, hf, tmp_path)


def test_a_truncated_safetensors_download_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_encoder_state(_mae(seed=1)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(sm.ExternalWeightsError, match=r"model\.safetensors: not a readable"):
        sm.load_external_mae(path, _mae(seed=2))
    path.write_bytes(b"<html>404 Not Found</html>")  # a saved error page
    with pytest.raises(sm.ExternalWeightsError, match=r"model\.safetensors: not a readable"):
        sm.load_external_mae(path, _mae(seed=2))


def test_integer_or_complex_tensors_are_refused_not_cast_into_the_weights(tmp_path):
    for dtype in (torch.int8, torch.complex64):  # e.g. a quantised file
        state = {k: v.to(dtype) for k, v in _encoder_state(_mae(seed=1)).items()}
        path = tmp_path / f"{dtype}.pth"
        torch.save({"model": state}, path)
        name = str(dtype).removeprefix("torch.")
        for in_chans in (3, 1):  # as it is, and through the gray conversion
            dst = _mae(in_chans=in_chans, seed=2)
            before = {k: v.clone() for k, v in dst.state_dict().items()}
            with pytest.raises(sm.ExternalWeightsError, match=rf"holds {name} values, not float"):
                sm.load_external_mae(path, dst)
            assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())


def test_nested_wrapper_prefixes_and_a_head_without_bias_load(tmp_path):
    src = _mae(seed=1)
    state = {"model.module." + k: v for k, v in src.state_dict().items()}
    del state["model.module.decoder_pred.bias"]  # a pixel head stored without its bias
    path = tmp_path / "wrapped.pth"
    torch.save(state, path)
    rgb, gray = _mae(seed=2), _mae(in_chans=1, seed=2)
    assert sm.load_external_mae(path, rgb).missing == ["decoder_pred.bias"]
    report = sm.load_external_mae(path, gray)
    assert "decoder_pred" in report.converted and report.missing == []
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(_latent(rgb, x), _latent(src, x))
    zero = torch.zeros_like(gray.decoder_pred.bias)  # a missing bias is zero: converted, still 0
    torch.testing.assert_close(gray.decoder_pred.bias, zero, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "transformers"])
def test_nan_or_inf_weights_are_refused_naming_the_file_and_tensors(tmp_path, fmt):
    """A damaged file's NaN loaded without complaint and the model returned NaN images; now
    the tensors it would load are named, an ignored head's are not, and the model is left
    as it was."""
    state = _mae(seed=1).state_dict()
    with torch.no_grad():
        state["blocks.0.attn.qkv.weight"][0, 0] = float("nan")  # a query row in HF's layout
        state["norm.weight"][3] = float("inf")
    if fmt == "transformers":
        state = _to_transformers_layout(state)
    else:
        state["head.weight"] = torch.full((10, 32), float("nan"))  # not loaded: not named
    path = tmp_path / f"weights.{'pth' if fmt == 'pth' else 'safetensors'}"
    if fmt == "pth":
        torch.save({"model": state}, path)
    else:
        save_file(state, str(path))
    dst = _mae(seed=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(sm.ExternalWeightsError) as info:
        sm.load_external_mae(path, dst)
    message = str(info.value)
    assert message.startswith(f"{path}: NaN or infinite weights in ")
    qkv = dst.blocks[0].attn.qkv.weight.numel()
    assert f"blocks.0.attn.qkv.weight (1 of {qkv})" in message
    assert "norm.weight (1 of 32)" in message and message.count(" of ") == 2
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())


def test_a_nan_in_an_rgb_patch_embedding_is_named_after_the_gray_conversion(tmp_path):
    """One NaN of the RGB kernel reaches one gray kernel value and that filter's bias (the
    conversion folds every kernel value into the bias shift)."""
    state = _encoder_state(_mae(seed=1))
    state["patch_embed.proj.weight"][2, 1, 0, 0] = float("nan")
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    gray = _mae(in_chans=1, seed=2)
    with pytest.raises(sm.ExternalWeightsError) as info:
        sm.load_external_mae(path, gray)
    n_weight, n_bias = gray.patch_embed.proj.weight.numel(), gray.patch_embed.proj.bias.numel()
    assert str(info.value).startswith(
        f"{path}: NaN or infinite weights in patch_embed.proj.weight (1 of {n_weight}), "
        f"patch_embed.proj.bias (1 of {n_bias}); "
    )
