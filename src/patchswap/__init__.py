"""patchswap: teacher-free self-distillation with Intra-class Patch Swap (IPS).

The core (this namespace) depends on torch only: the swap op, the loss and the pair sampler.
"""

from patchswap.ips_options import DistillOptions, SwapOptions
from patchswap.losses import (
    DenseIPSLoss,
    DenseIPSLossOutput,
    IPSLoss,
    IPSLossOutput,
    distillation_kl,
    kl_with_temperature,
    soft_cross_entropy,
)
from patchswap.ops import (
    PatchSwap,
    SwapResult,
    apply_cell_mask,
    patch_swap,
    patch_swap_boxes,
    patch_swap_targets,
    sample_cell_mask,
)
from patchswap.sampling import ClassPairBatchSampler, dataset_labels

__version__ = "0.1.0"

__all__ = [
    "ClassPairBatchSampler",
    "DenseIPSLoss",
    "DenseIPSLossOutput",
    "DistillOptions",
    "IPSLoss",
    "IPSLossOutput",
    "PatchSwap",
    "SwapOptions",
    "SwapResult",
    "__version__",
    "apply_cell_mask",
    "dataset_labels",
    "distillation_kl",
    "kl_with_temperature",
    "patch_swap",
    "patch_swap_boxes",
    "patch_swap_targets",
    "sample_cell_mask",
    "soft_cross_entropy",
]
