"""Checkpoint writes are atomic: a failed write names the file and leaves no debris."""

from __future__ import annotations

import errno
import json
import re

import pytest
import safetensors.torch
import sem_models as sm
import torch


def test_failed_weight_write_keeps_the_previous_checkpoint_and_no_temporary(
    tiny_mae, tmp_path, monkeypatch
):
    sm.save_model(tiny_mae, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = safetensors.torch.save_file

    def disk_full(state, path, metadata=None):
        real(state, path, metadata=metadata)  # a partial file exists when the disk fills up
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with torch.no_grad():
        tiny_mae.decoder_pred.bias.add_(1.0)
    with pytest.raises(sm.CheckpointWriteError, match=r"model\.safetensors.*no space left"):
        sm.save_model(tiny_mae, tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # the old pair is intact, no temporary file is left
    again = sm.load_model(tmp_path)
    assert not torch.equal(again.decoder_pred.bias, tiny_mae.decoder_pred.bias)


def test_safetensors_errors_become_the_package_error(tiny_mae, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def broken(state, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(sm.CheckpointWriteError, match=r"model\.safetensors") as info:
        sm.save_model(tiny_mae, tmp_path / "new")
    assert isinstance(info.value, OSError)
    assert [p.name for p in (tmp_path / "new").iterdir()] == []


def test_save_model_replaces_an_existing_checkpoint_in_place(tiny_mae, tmp_path):
    sm.save_model(tiny_mae, tmp_path)
    with torch.no_grad():
        tiny_mae.decoder_pred.bias.fill_(0.25)
    sm.save_model(tiny_mae, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    torch.testing.assert_close(
        sm.load_model(tmp_path).decoder_pred.bias, tiny_mae.decoder_pred.bias
    )


def test_a_training_run_folder_loads_its_best_export(tmp_path):
    """``sem train`` run folders name their best export in checkpoints/best.json."""
    import json

    import torch
    from sem_models import build_mae, load_model, save_model
    from sem_models.testing import MICRO_MAE

    torch.manual_seed(3)
    mae = build_mae("tiny", in_chans=1, **MICRO_MAE)
    save_model(mae, tmp_path / "run" / "checkpoints" / "best-00000007")
    (tmp_path / "run" / "checkpoints" / "best.json").write_text(
        json.dumps({"dir": "best-00000007", "step": 7})
    )
    # A run folder also holds the run's own settings as config.json (but no weights).
    (tmp_path / "run" / "config.json").write_text(json.dumps({"run": {"epochs": 1}}))
    again = load_model(tmp_path / "run")
    torch.testing.assert_close(again.state_dict(), mae.state_dict())
    # a pointer names a folder beside it, never one elsewhere (here: another model's export)
    save_model(mae, tmp_path / "elsewhere")
    for crafted in ("../../elsewhere", str(tmp_path / "elsewhere")):
        (tmp_path / "run" / "checkpoints" / "best.json").write_text(json.dumps({"dir": crafted}))
        with pytest.raises(sm.CheckpointError, match="must name a best-NNNNNNNN folder"):
            load_model(tmp_path / "run")


def test_a_corrupt_weights_file_is_named_when_loading(tiny_mae, tmp_path):
    folder = tmp_path / "m"
    sm.save_model(tiny_mae, folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(sm.CheckpointError, match="not a readable safetensors file") as info:
        sm.load_model(folder)
    assert str(weights) in str(info.value)


@pytest.mark.skipif(__import__("os").name != "posix", reason="POSIX permission bits")
def test_saved_checkpoints_are_readable_as_the_umask_allows(tiny_mae, tmp_path):
    """safetensors creates its file readable by the owner only; the saved weights and config
    get the mode of any new file (``0o666 & ~umask``), so colleagues can load them."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        sm.save_model(tiny_mae, tmp_path)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644}


def test_export_meta_is_read_without_torch_and_agrees_with_the_loaded_model(tmp_path):
    """``read_export_meta`` (no torch) tells the kind and MoE layers that loading shows."""
    from sem_models.testing import MICRO_MAE
    from sem_physics.testing import python_output

    torch.manual_seed(0)
    moe = sm.build_mae("tiny", in_chans=1, moe=sm.MoEConfig(num_experts=2), **MICRO_MAE)
    sm.save_model(sm.RestorationModel(moe, residual=True), tmp_path / "ft")
    sm.save_model(sm.build_mae("tiny", in_chans=1, **MICRO_MAE), tmp_path / "dense")
    code = (
        "import sys\nfrom sem_models.checkpoint import export_model_kind, read_export_meta\n"
        f"for f in ('ft', 'dense'):\n    m = read_export_meta({str(tmp_path)!r} + '/' + f)\n"
        "    print(export_model_kind(m), m.get('residual'))\n"
        "print('torch' in sys.modules)\n"
    )
    assert python_output(code).splitlines() == ["restoration True", "dense None", "False"]
    loaded = sm.load_model(tmp_path / "ft")
    assert loaded.residual and loaded.mae.config.moe is not None
    meta = sm.checkpoint.read_export_meta(tmp_path / "ft")
    assert sm.checkpoint.export_has_moe(meta)
    assert not sm.checkpoint.export_has_moe(sm.checkpoint.read_export_meta(tmp_path / "dense"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "not found"),
        ("{not json", "not a valid sem-models config"),
        ('{"run": {"epochs": 1}}', "unknown kind None (mae, restoration)"),
        ('{"kind": "vae", "mae": {}}', "unknown kind 'vae'"),
        ('{"kind": "mae"}', "not a valid sem-models config"),
        ('{"kind": "mae", "mae": {"depth": -1}}', "not a valid sem-models config"),
    ],
)
def test_a_bad_export_config_is_refused_naming_the_file(tmp_path, text, words):
    from sem_models.checkpoint import read_export_meta

    if text is not None:
        (tmp_path / "config.json").write_text(text)
    (tmp_path / "model.safetensors").write_bytes(b"")
    for read in (read_export_meta, sm.load_model):  # the same words, with or without torch
        with pytest.raises(sm.CheckpointError, match=re.escape(words)) as info:
            read(tmp_path)
        assert str(info.value).startswith(str(tmp_path / "config.json"))


def test_an_edited_config_is_refused_before_any_memory_is_taken(tiny_mae, tmp_path):
    """config.json sets the size of the model built: one asking for embed_dim 16384 × depth 48
    (about 150 GB) is compared with the weights' header on the meta device and refused at once;
    integer tensors of the right shapes do not pass for float weights."""
    import json
    import resource
    import time

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    sm.save_model(tiny_mae, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["mae"].update(embed_dim=16384, depth=48, num_heads=16)
    (folder / "config.json").write_text(json.dumps(meta))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # CPU time of this process (all its threads): other work on the machine does not count
    t0 = time.process_time()
    with pytest.raises(sm.CheckpointError, match=r"does not match .*config\.json"):
        sm.load_model(folder)
    assert time.process_time() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500_000  # KiB

    other = tmp_path / "int"
    sm.save_model(tiny_mae, other)
    state = load_file(str(other / "model.safetensors"))
    save_file({k: v.to(torch.int32) for k, v in state.items()}, str(other / "model.safetensors"))
    with pytest.raises(sm.CheckpointError, match="holds I32 values, not floating point"):
        sm.load_model(other)


def test_a_link_planted_at_the_temporary_name_is_not_followed(tiny_mae, tmp_path):
    import os

    from sem_physics.testing import symlink_or_skip

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "m"
    folder.mkdir()
    symlink_or_skip(folder / f".model.{os.getpid()}.tmp.safetensors", victim)
    sm.save_model(tiny_mae, folder)
    assert victim.read_text() == "precious"
    torch.testing.assert_close(sm.load_model(folder).state_dict(), tiny_mae.state_dict())


def test_loading_a_model_leaves_the_global_torch_rng_alone(tiny_mae, tmp_path):
    """The model is built with random weights before its own are loaded: that draw must not
    move a caller's seeded torch random stream."""
    sm.save_model(tiny_mae, tmp_path / "m")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sm.load_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_compiled_and_data_parallel_models_are_saved_as_the_model_inside(tiny_mae, tmp_path):
    from torch.nn.parallel import DataParallel

    for name, wrapped in (("compiled", torch.compile(tiny_mae)), ("dp", DataParallel(tiny_mae))):
        sm.save_model(wrapped, tmp_path / name)
        loaded = sm.load_model(tmp_path / name)
        state = tiny_mae.state_dict()
        assert loaded.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_an_unknown_format_is_refused_naming_the_file(tiny_mae, tmp_path):
    import json

    sm.save_model(tiny_mae, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    for fmt in ("other/9", None):
        meta["format"] = fmt
        (tmp_path / "config.json").write_text(json.dumps(meta))
        for read in (sm.checkpoint.read_export_meta, sm.load_model):
            with pytest.raises(sm.CheckpointError, match=re.escape(f"unknown format {fmt!r}")) as e:
                read(tmp_path)
            assert str(e.value).startswith(str(tmp_path / "config.json"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_reduced_precision_model_reloads_in_its_dtype(tiny_mae, tmp_path, dtype):
    model = sm.RestorationModel(tiny_mae, refiner_width=4).to(dtype)
    sm.save_model(model, tmp_path)
    loaded = sm.load_model(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_an_export_without_a_dtype_loads_as_float32(tiny_mae, tmp_path):
    """float32 exports record no dtype (as every export written before the key existed)."""
    import json

    sm.save_model(tiny_mae, tmp_path)
    assert "dtype" not in json.loads((tmp_path / "config.json").read_text())
    assert {p.dtype for p in sm.load_model(tmp_path).parameters()} == {torch.float32}
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "dtype": "int8"}))
    with pytest.raises(sm.CheckpointError, match="unknown dtype 'int8'"):
        sm.load_model(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("residual", "false", "true or false"),  # bool("false") read it as True
        ("freeze_encoder", 1, "true or false"),
        ("refiner_width", 4.7, "a whole number >= 0"),  # int() truncated it to 4
        ("refiner_width", "abc", "a whole number >= 0"),
        ("refiner_width", None, "a whole number >= 0"),
        ("masked_ensemble", 3, "0 or 4"),
        ("guide_balances", 0.1, "a list of finite numbers > 0"),
        ("guide_balances", ["0.1"], "a list of finite numbers > 0"),
    ],
)
def test_a_restoration_field_of_the_wrong_type_is_named_with_its_file(
    tiny_mae, tmp_path, field, value, accepted
):
    sm.save_model(sm.RestorationModel(tiny_mae, residual=False), tmp_path)
    path = tmp_path / "config.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta[field] = value
    path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(sm.CheckpointError, match=rf"config\.json: {field} must be {accepted}"):
        sm.load_model(tmp_path)


def test_settings_that_do_not_go_together_are_named_with_the_file(tiny_mae, tmp_path):
    sm.save_model(sm.RestorationModel(tiny_mae, residual=True), tmp_path)
    path = tmp_path / "config.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["masked_ensemble"] = 4  # the zero-shot reconstruction of a residual model
    path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(sm.CheckpointError, match=r"config\.json: masked_ensemble .* residual"):
        sm.load_model(tmp_path)


def test_flags_given_as_numbers_are_saved_as_booleans_and_reload(tiny_mae, tmp_path):
    model = sm.RestorationModel(tiny_mae, freeze_encoder=0, residual=1)  # type: ignore[arg-type]
    sm.save_model(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert meta["freeze_encoder"] is False and meta["residual"] is True
    again = sm.load_model(tmp_path)
    assert again.residual is True and again.freeze_encoder is False


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_holding_nan_or_inf_are_refused_naming_the_file_and_tensors(
    tiny_mae, tmp_path, dtype
):
    """A diverged run's export loaded without complaint and restored NaN images."""
    model = sm.RestorationModel(tiny_mae, refiner_width=4).to(dtype)
    with torch.no_grad():
        model.mae.decoder_pred.bias[[0, 3]] = torch.tensor(
            [float("nan"), -float("inf")], dtype=dtype
        )
        model.mae.patch_embed.proj.weight.view(-1)[5] = float("inf")
    sm.save_model(model, tmp_path)
    with pytest.raises(sm.CheckpointError) as info:
        sm.load_model(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'model.safetensors'}: NaN or infinite weights in ")
    n_bias = model.mae.decoder_pred.bias.numel()
    n_proj = model.mae.patch_embed.proj.weight.numel()
    assert f"mae.decoder_pred.bias (2 of {n_bias})" in message
    assert f"mae.patch_embed.proj.weight (1 of {n_proj})" in message
    assert message.count(" of ") == 2  # no other tensor named


def test_finite_weights_beyond_the_recorded_dtype_are_refused(tiny_mae, tmp_path):
    """float32 weights read as float16 (an edited config.json): 1e6 would become inf."""
    with torch.no_grad():
        tiny_mae.decoder_pred.bias[1] = 1e6
    sm.save_model(tiny_mae, tmp_path)
    assert torch.equal(sm.load_model(tmp_path).decoder_pred.bias, tiny_mae.decoder_pred.bias)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "dtype": "float16"}))
    with pytest.raises(sm.CheckpointError, match=r"decoder_pred\.bias \(1 of \d+\)"):
        sm.load_model(tmp_path)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn]
)
def test_the_nonfinite_count_agrees_with_torch(dtype):
    """The bit test counts what torch.isfinite counts, at the edges of each format too."""
    from sem_models.checkpoint import _nonfinite

    info = torch.finfo(dtype)
    edges = [info.max, -info.max, info.tiny, info.tiny / 4, 0.0, -0.0, 1.0]
    special = [float("nan"), float("inf"), -float("inf")]
    values = torch.tensor(edges + special * 3, dtype=torch.float64)
    randoms = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tensor = torch.cat([values, randoms]).to(dtype).reshape(-1, 2)
    assert _nonfinite(tensor) == int((~torch.isfinite(tensor.double())).sum())
    assert _nonfinite(tensor[:, 0]) == int((~torch.isfinite(tensor[:, 0].double())).sum())


def test_nonfinite_tensors_names_the_floating_tensors_holding_nan_or_inf_in_order():
    """The one check the other loaders share: counts per tensor, integer tensors skipped (an
    RNG state or a step counter is no weight), the rest summed up beyond three."""
    from sem_models.checkpoint import describe_nonfinite, nonfinite_tensors

    state = {f"t{i}": torch.zeros(4, 5) for i in range(6)}
    state["steps"] = torch.full((3,), torch.iinfo(torch.int64).max)
    for i, name in enumerate(["t1", "t3", "t4", "t5"]):  # i + 1 values each, NaN or -inf
        state[name].view(-1)[: i + 1] = float("nan") if i % 2 else -float("inf")
    found = nonfinite_tensors(state)
    assert found == [("t1", 1, 20), ("t3", 2, 20), ("t4", 3, 20), ("t5", 4, 20)]
    text = describe_nonfinite(found)
    assert text == "t1 (1 of 20), t3 (2 of 20), t4 (3 of 20) and 1 more tensor"
    assert describe_nonfinite(found, limit=1).endswith("and 3 more tensors")
    assert describe_nonfinite(found[:2]) == "t1 (1 of 20), t3 (2 of 20)"
    assert nonfinite_tensors({k: v for k, v in state.items() if k in ("t0", "t2", "steps")}) == []
