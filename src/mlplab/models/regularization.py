"""Weight penalties and constraints. Weight matrices only: biases and norm parameters are
left alone, which is what "L1/L2 on the weights" means in the literature."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def weight_matrices(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear)]


def l1_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ|w| over all given matrices (multiply by the l1 coefficient outside)."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def l2_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """½ Σw²: the ½ makes the gradient `l2 * w`, the same step as coupled weight decay."""
    return 0.5 * torch.stack([w.pow(2).sum() for w in weights]).sum()


@torch.no_grad()
def apply_max_norm(weights: Iterable[torch.Tensor], max_norm: float) -> None:
    """Rescale each unit's incoming weight vector (a row of W) to norm ≤ max_norm
    (Srivastava et al. 2014), in place, after the optimizer step."""
    for w in weights:
        w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))
