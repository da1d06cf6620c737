"""Learned restorers (Noise2Noise, Noise2Void, MRN) and their shared training loop."""

from .base import LearnedConfig, NetworkRestorer
from .mrn import MRNRestorer, MRNRestorerConfig
from .noise2noise import Noise2NoiseConfig, Noise2NoiseRestorer
from .noise2void import Noise2VoidConfig, Noise2VoidRestorer, blind_spot_mask
from .training import FitConfig, FitResult, fit_restorer, trainable_restorers

__all__ = [
    "FitConfig",
    "FitResult",
    "LearnedConfig",
    "MRNRestorer",
    "MRNRestorerConfig",
    "NetworkRestorer",
    "Noise2NoiseConfig",
    "Noise2NoiseRestorer",
    "Noise2VoidConfig",
    "Noise2VoidRestorer",
    "blind_spot_mask",
    "fit_restorer",
    "trainable_restorers",
]
