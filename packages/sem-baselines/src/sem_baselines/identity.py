"""The "defocused input" row of every table: returns the image unchanged."""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict
from sem_physics.fields import NoBoolNumbers

from .restorer import check_image, register

__all__ = ["IdentityConfig", "IdentityRestorer"]


class IdentityConfig(NoBoolNumbers):
    """No settings."""

    model_config = ConfigDict(extra="forbid")


@register("input", IdentityConfig)
class IdentityRestorer:
    """Identity: the degraded input itself, so that tables include the starting point."""

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self.config = config or IdentityConfig()

    def restore(self, image: np.ndarray) -> np.ndarray:
        return check_image(image).copy()
