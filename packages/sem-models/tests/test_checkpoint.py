"""Checkpoint writes are atomic: a failed write names the file and leaves no debris."""

from __future__ import annotations

import errno

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
