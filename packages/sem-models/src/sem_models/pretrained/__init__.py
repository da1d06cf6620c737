"""Models shipped with sem-models as package data, found by name.

Each shipped model is a folder ``sem_models/pretrained/<name>/`` holding the two files
:func:`sem_models.save_model` writes (``config.json`` + ``model.safetensors``) and a
``MODEL_CARD.md`` (architecture, data and licences, recipe, training time, scores). The wheel
carries these folders as they are; a model that was not installed (a source checkout without
the weights) raises :class:`ShippedModelMissingError` saying where it belongs and how to make it.

* ``sem-foundation``: the paper's full model (arXiv 2604.05960: MAE + Mixture-of-Experts
  encoder after Stages 1-3), fine-tuned few-shot for defocus-to-focus restoration
  (a :class:`sem_models.RestorationModel`).
* ``sem-foundation-zero-shot``: the pretrained Stage-3 MAE + MoE it was fine-tuned from
  (a :class:`sem_models.MaskedAutoencoder`), used without any training pair.

Example
-------
>>> from sem_models.pretrained import SHIPPED_MODELS, shipped_model_dir
>>> sorted(SHIPPED_MODELS)
['sem-foundation', 'sem-foundation-zero-shot']
>>> folder = shipped_model_dir("sem-foundation")  # doctest: +SKIP
>>> model = sem_models.load_model(folder)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODELS", "ShippedModelMissingError", "shipped_model_dir"]

#: Name -> what the folder holds and how it is produced (quoted by the missing-model error).
SHIPPED_MODELS: dict[str, str] = {
    "sem-foundation": (
        "the fine-tuned restoration model: run `sem train recipe --config cpu-base --data "
        "FOLDER` (Stages 1-3 and the fine-tune) and copy runs/cpu-base/finetune's best export"
    ),
    "sem-foundation-zero-shot": (
        "the pretrained Stage-3 MAE + MoE: run `sem train recipe --config cpu-base --data "
        "FOLDER` and copy runs/cpu-base/stage3's best export"
    ),
}

_ROOT = Path(__file__).resolve().parent
_FILES = ("config.json", "model.safetensors")


class ShippedModelMissingError(FileNotFoundError):
    """A shipped model whose files are not installed; the message says how to get them."""


def shipped_model_dir(name: str) -> Path:
    """The installed folder of shipped model ``name`` (``config.json`` + ``model.safetensors``).

    Raises ``ValueError`` for an unknown name (listing the known ones) and
    :class:`ShippedModelMissingError` naming the folder and the recipe when its files are absent.
    """
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(SHIPPED_MODELS)}")
    folder = _ROOT / name
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise ShippedModelMissingError(
            f"the shipped model {name!r} is not installed: {folder} lacks {' and '.join(missing)}"
            f" ({SHIPPED_MODELS[name]}: its config.json and model.safetensors go into that "
            "folder), or give another folder written by sem_models.save_model"
        )
    return folder
