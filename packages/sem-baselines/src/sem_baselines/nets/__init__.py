"""Networks of the learned baselines: a shared U-Net and the multi-scale refocus network."""

from .mrn import MRNConfig, MultiScaleRefocusNet
from .unet import UNet, UNetConfig, pad_to_multiple

__all__ = ["MRNConfig", "MultiScaleRefocusNet", "UNet", "UNetConfig", "pad_to_multiple"]
