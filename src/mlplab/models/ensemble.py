"""Several MLPs trained side by side, predicting together (`model.members`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlplab.models.mlp import MLP


def log_mean_prob(outputs: torch.Tensor, n: int) -> torch.Tensor:
    """log(mean over dim 0 of softmax) of [n, batch, classes] logits or log-probabilities:
    how ensemble members and test-time views (`data.tta`) are combined. `n` is passed as an
    int so that a traced graph (TensorBoard's) keeps it a constant."""
    return torch.logsumexp(F.log_softmax(outputs, dim=-1), dim=0) - math.log(n)


class Ensemble(nn.Module):
    """`members` independently initialised MLPs on the same batches, each with its own loss
    and dropout masks; they predict by averaging their class probabilities.

    Members are not trained on the loss of the average: that couples them, and they learn to
    correct each other rather than to be right on their own, which removes the disagreement
    an ensemble is for. `member_outputs` gives the per-member outputs for training; `forward`
    gives the average as log-probabilities, which `cross_entropy` and `softmax` treat as
    logits (log-softmax leaves normalised log-probabilities unchanged).
    """

    def __init__(self, members: Sequence[MLP]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """[members, batch, classes] logits (or log-probabilities, for `loss=nll`)."""
        return torch.stack([m(x) for m in self.members])

    def combine(self, outputs: torch.Tensor) -> torch.Tensor:
        """log(mean over members of softmax) from [members, batch, classes] outputs."""
        return log_mean_prob(outputs, len(self.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_outputs(x))
