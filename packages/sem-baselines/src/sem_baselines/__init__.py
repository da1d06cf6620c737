"""sem_baselines: every baseline of the paper behind one ``Restorer`` interface.

>>> import numpy as np
>>> from sem_baselines import get_restorer, list_restorers
>>> "wiener" in list_restorers()
True
>>> get_restorer("wiener").restore(np.full((32, 32), 100.0, np.float32)).shape
(32, 32)

Names are imported on first use (PEP 562), and so is each method's module (the registry's
``BUILTIN_MODULES``): restoring with Wiener or Richardson-Lucy loads neither torch nor bm3d.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "BM3DConfig",
    "BM3DRestorer",
    "FitConfig",
    "FitOptions",
    "FitResult",
    "Fitting",
    "IdentityConfig",
    "IdentityRestorer",
    "LearnedRestorer",
    "MAEImageNetConfig",
    "MAEImageNetRestorer",
    "MAESEMConfig",
    "MAESEMRestorer",
    "MRNRestorer",
    "MRNRestorerConfig",
    "Noise2NoiseConfig",
    "Noise2NoiseRestorer",
    "Noise2VoidConfig",
    "Noise2VoidRestorer",
    "PluginWarning",
    "RegistryEntry",
    "Restorer",
    "RestorerConfigError",
    "RichardsonLucyConfig",
    "RichardsonLucyRestorer",
    "SEMFoundationConfig",
    "SEMFoundationRestorer",
    "SEMFoundationZeroShotConfig",
    "SEMFoundationZeroShotRestorer",
    "WienerConfig",
    "WienerRestorer",
    "check_image",
    "declared_trainable",
    "estimate_sigma",
    "fixed_psf",
    "get_restorer",
    "list_restorers",
    "load_restorer",
    "register",
    "registry_entry",
    "restorer_config",
    "tiled_apply",
    "trainable_restorers",
    "unknown_restorers",
]

# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:  # static analysers see the eager imports
    from .classical import (
        BM3DConfig,
        BM3DRestorer,
        RichardsonLucyConfig,
        RichardsonLucyRestorer,
        WienerConfig,
        WienerRestorer,
        estimate_sigma,
        fixed_psf,
    )
    from .foundation import (
        SEMFoundationConfig,
        SEMFoundationRestorer,
        SEMFoundationZeroShotConfig,
        SEMFoundationZeroShotRestorer,
    )
    from .identity import IdentityConfig, IdentityRestorer
    from .learned import (
        FitConfig,
        FitResult,
        MRNRestorer,
        MRNRestorerConfig,
        Noise2NoiseConfig,
        Noise2NoiseRestorer,
        Noise2VoidConfig,
        Noise2VoidRestorer,
        trainable_restorers,
    )
    from .mae import MAEImageNetConfig, MAEImageNetRestorer, MAESEMConfig, MAESEMRestorer
    from .plugins import PluginWarning
    from .restorer import (
        FitOptions,
        Fitting,
        LearnedRestorer,
        RegistryEntry,
        Restorer,
        RestorerConfigError,
        check_image,
        declared_trainable,
        get_restorer,
        list_restorers,
        load_restorer,
        register,
        registry_entry,
        restorer_config,
        unknown_restorers,
    )
    from .tiling import tiled_apply
