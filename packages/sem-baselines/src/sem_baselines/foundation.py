"""The paper's own model as registry entries: the SEM MAE + Mixture-of-Experts (Stages 1-3).

arXiv 2604.05960, Tables 2-4 rows "ours few-shot" and "ours zero-shot":

* ``"sem-foundation"``: a restoration model fine-tuned few-shot from the MAE + MoE encoder.
  Config ``checkpoint_dir`` (a folder written by :func:`sem_models.save_model`) and
  ``finetune_here``:

  - ``finetune_here=False`` (default): the checkpoint is a fine-tuned restoration model, used
    as it is; without ``checkpoint_dir``, the model shipped with sem-models
    (``sem_models.pretrained``, ``"sem-foundation"``).
  - ``finetune_here=True``: the checkpoint is the pretrained Stage-3 MAE (default: the shipped
    ``"sem-foundation-zero-shot"``), given a restoration head here (``head``: by default the
    shipped fine-tuned model's, i.e. residual output, refiner and physics guides, so a
    fine-tune here follows the shipped recipe; ``"paper"``: the decoder alone); the registry entry
    (``fitting="finetune"``, ``finetune_field="finetune_here"``) tells an evaluation to
    fine-tune it on its protocol's training images with the paper's protocol (sem-train).
    ``freeze_encoder`` applies to that MAE; a restoration checkpoint is fine-tuned further
    with its own settings. Outside an evaluation (``get_restorer``, ``sem restore``) nothing
    is fine-tuned: the MAE then restores as the zero-shot form does.

* ``"sem-foundation-zero-shot"``: the pretrained MAE used as a restorer without any pair: each
  patch is reconstructed from the others while it is masked, in four passes that each show
  the encoder an interleaved quarter of the patches (``RestorationModel(mae, residual=False,
  masked_ensemble=4)``; the decoder of an MAE never learns to predict visible patches). Default checkpoint: the shipped
  ``"sem-foundation-zero-shot"``. A non-residual restoration checkpoint (this restorer's own
  saved network) is accepted; a residual one is fine-tuned and refused.

Dense checkpoints (no MoE) are accepted by both, and ``restorer.notes`` says so (an evaluation
report carries the notes): such a row is then not the paper's full model. Inference, saving and
loading are those of the MAE baselines (:mod:`sem_baselines.mae`): Hann-blended sliding
windows of the model's input size (or ``window_px``), overlapping so that the patch grid
averages out (``overlap_px``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field
from sem_models import RestorationModel
from sem_models.checkpoint import CONFIG_NAME
from sem_models.mae import MaskedAutoencoder
from sem_models.pretrained import ShippedModelMissingError, shipped_model_dir

from .checkpoint_kinds import shipped_default
from .mae import _MAEInferenceConfig, _MAERestorer, load_mae_checkpoint
from .restorer import register

__all__ = [
    "SEMFoundationConfig",
    "SEMFoundationRestorer",
    "SEMFoundationZeroShotConfig",
    "SEMFoundationZeroShotRestorer",
]

_CHECKPOINT = "folder written by sem_models.save_model; None = the model shipped with sem-models"


class SEMFoundationConfig(_MAEInferenceConfig):
    """The paper's fine-tuned model: shipped, given, or fine-tuned here (``finetune_here``)."""

    checkpoint_dir: str | None = Field(default=None, description=_CHECKPOINT)
    finetune_here: bool = Field(
        default=False,
        description="fine-tune here on the protocol's training images, from the pretrained "
        "Stage-3 MAE (False: the checkpoint is already fine-tuned and used as it is)",
    )
    freeze_encoder: bool = Field(default=True, description="encoder frozen for fine-tuning")
    head: Literal["shipped", "paper"] = Field(
        default="shipped",
        description="restoration head given to the MAE with finetune_here: 'shipped' = the "
        "shipped sem-foundation model's (residual, refiner, physics guides; from its "
        "config.json), 'paper' = the paper's decoder alone",
    )


class SEMFoundationZeroShotConfig(_MAEInferenceConfig):
    """The paper's pretrained model used as a restorer without any training pair."""

    checkpoint_dir: str | None = Field(default=None, description=_CHECKPOINT)


class _FoundationRestorer(_MAERestorer):
    def _checkpoint(self, given: str | None, *, fine_tunes: bool = False) -> str | Path:
        """``given``, else the shipped model's folder (a clear error when not installed)."""
        if given is not None:
            return given
        shipped = shipped_default(self.name, fine_tunes=fine_tunes)
        assert shipped is not None  # both foundation restorers have a shipped model
        try:
            folder = shipped_model_dir(shipped)
        except ShippedModelMissingError as err:
            raise ShippedModelMissingError(
                f"{self.name}: checkpoint_dir not set and {err}"
            ) from None
        self.notes.append(f"the {shipped!r} model shipped with sem-models")
        return folder

    def _note_dense(self, mae: MaskedAutoencoder, folder: str | Path) -> None:
        if mae.config.moe is None:
            self.notes.append(
                f"{folder} is a dense model (no Mixture-of-Experts): this row is not the "
                "paper's MAE + MoE"
            )


@register(
    "sem-foundation",
    SEMFoundationConfig,
    fitting="finetune",
    checkpoint_field="checkpoint_dir",
    finetune_field="finetune_here",
)
class SEMFoundationRestorer(_FoundationRestorer):
    """The paper's model fine-tuned few-shot ("ours few-shot"), sliding-window restore."""

    config: SEMFoundationConfig

    def _build(self) -> RestorationModel:
        cfg = self.config
        folder = self._checkpoint(cfg.checkpoint_dir, fine_tunes=cfg.finetune_here)
        hint = (
            f"fine-tune it first (sem train finetune --init-from {folder}), use "
            "sem-foundation-zero-shot, or in an evaluation set finetune_here=true to "
            "fine-tune it on its training images"
        )
        self._check_kind(folder, hint, fine_tunes=cfg.finetune_here)
        model, mae = load_mae_checkpoint(folder, self.name)
        self._note_dense(mae, folder)
        if isinstance(model, RestorationModel):
            return model
        model = RestorationModel(mae, freeze_encoder=cfg.freeze_encoder, **self._head())
        # a new residual head starts as the identity (the physics guide, when it has guides),
        # as the recipe's fine-tune does; the pretrained reconstruction is no correction
        return model.start_as_identity() if model.residual else model

    def _head(self) -> dict[str, Any]:
        """The restoration head's settings for a fine-tune here (see ``head``)."""
        if self.config.head == "paper":
            return {}
        try:
            folder = shipped_model_dir("sem-foundation")
        except ShippedModelMissingError as err:
            raise ShippedModelMissingError(
                f"{self.name}: head='shipped' copies the shipped model's head and {err}; "
                "or set head=paper"
            ) from None
        saved = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
        keys = ("residual", "refiner_width", "guide_balances")
        head = {k: saved[k] for k in keys if k in saved}
        self.notes.append(
            "restoration head of the shipped 'sem-foundation' model: "
            + ", ".join(f"{k}={v}" for k, v in head.items())
        )
        return head


@register(
    "sem-foundation-zero-shot", SEMFoundationZeroShotConfig, checkpoint_field="checkpoint_dir"
)
class SEMFoundationZeroShotRestorer(_FoundationRestorer):
    """The pretrained MAE + MoE reconstructing the image from all its patches ("ours zero-shot")."""

    config: SEMFoundationZeroShotConfig
    #: What a user restoring their own images with it should know (``sem restore`` says it).
    caution: ClassVar[str] = (
        "the paper's zero-shot row: the pretrained MAE reconstructs the image from all its "
        "patches and does not deblur; it scores below the defocused input in every table here "
        "(restore with sem-foundation)"
    )

    def _build(self) -> RestorationModel:
        folder = self._checkpoint(self.config.checkpoint_dir)
        self._check_kind(folder, "use sem-foundation for a fine-tuned one")
        model, mae = load_mae_checkpoint(folder, self.name)
        self._note_dense(mae, folder)
        if isinstance(model, RestorationModel):
            return model
        return RestorationModel(mae, freeze_encoder=True, residual=False, masked_ensemble=4)
