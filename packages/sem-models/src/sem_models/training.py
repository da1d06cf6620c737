"""The result of a training run, one type for both training loops of the toolkit.

``sem_baselines`` trains its learned restorers in a compact in-memory loop
(``fit_restorer``); ``sem_train.engine`` trains the foundation model (and the same
restorers) with checkpoints, resume and DDP. Both report a :class:`FitResult`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FitResult"]


class FitResult(BaseModel):
    """What a training run produced, from either training loop of the toolkit.

    ``best_loss`` is the score that chose the weights kept: the validation loss, or the
    training loss where a library fit has no validation images (None where a run with no
    validation data keeps its last weights). The paths are those of a run folder with
    checkpoints; a library fit, which writes nothing, leaves them None.
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(description="epochs completed")
    global_step: int = Field(description="optimizer steps taken")
    stopped_early: bool = Field(
        default=False, description="a non-finite loss or max_steps stopped it"
    )
    best_loss: float | None = None
    best_epoch: int | None = Field(default=None, description="epoch (0-based) of the kept weights")
    history: list[dict[str, float]] = Field(
        default_factory=list, description="per-epoch train_loss (and val_loss)"
    )
    first_train_loss: float | None = Field(default=None, description="loss of the first step")
    last_train_loss: float | None = Field(default=None, description="loss of the last step")
    output_dir: Path | None = Field(default=None, description="run folder")
    best_dir: Path | None = Field(default=None, description="export of the best weights")
    latest_checkpoint: Path | None = Field(default=None, description="newest checkpoint file")
