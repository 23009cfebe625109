"""Plain `nn.Module` MLP builder: no Lightning, so it is reusable and easy to test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mlplab.models.dropout import Dropout

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}
NORMS = ("none", "batchnorm", "layernorm")
INITS = ("default", "kaiming", "xavier", "normal")
# nn.init.calculate_gain knows only some names; the rest are close enough to these.
_GAIN_NAME = {"relu": "relu", "leaky_relu": "leaky_relu", "selu": "selu", "tanh": "tanh",
              "sigmoid": "sigmoid", "elu": "relu", "gelu": "relu", "silu": "relu",
              "mish": "relu", "softplus": "relu", "identity": "linear"}


def per_layer(value: object, n_layers: int, key: str) -> list:
    """Broadcast a scalar to one value per hidden layer; a list must already have that length."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_layers:
            raise ValueError(
                f"{key}={list(value)}: a per-layer list needs {n_layers} entries, "
                f"one per hidden layer in hidden_sizes"
            )
        return list(value)
    return [value] * n_layers


class MLP(nn.Module):
    """Linear → [norm] → activation → [dropout] per hidden layer, then a linear head.

    With `log_softmax=True` the head is followed by LogSoftmax so the output feeds `nll_loss`,
    the habit of the course notes; otherwise it returns logits for `cross_entropy`.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str | Sequence[str] = "relu",
        dropout: float | Sequence[float] = 0.0,
        input_dropout: float = 0.0,
        norm: str = "none",
        bias: bool = True,
        init: str = "default",
        init_std: float = 0.01,
        log_softmax: bool = False,
    ) -> None:
        super().__init__()
        n = len(hidden_sizes)
        activations = per_layer(activation, n, "activation")
        dropouts = per_layer(dropout, n, "dropout")
        layers: list[nn.Module] = []
        if input_dropout > 0:
            layers.append(Dropout(input_dropout))
        width = in_features
        for size, act, p in zip(hidden_sizes, activations, dropouts):
            layers.append(nn.Linear(width, size, bias=bias))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layernorm":
                layers.append(nn.LayerNorm(size))
            layers.append(ACTIVATIONS[act]())
            if p > 0:
                layers.append(Dropout(p))
            width = size
        # The output layer keeps its bias even when hidden layers drop theirs: the notes'
        # 20→13→8→3 network does exactly that.
        layers.append(nn.Linear(width, n_classes))
        if log_softmax:
            layers.append(nn.LogSoftmax(dim=1))
        self.net = nn.Sequential(*layers)
        self._init_weights(init, activations, init_std)

    def _init_weights(self, init: str, activations: list[str], std: float) -> None:
        if init == "default":
            return
        linears = self.linears()
        # The head's "activation" is the softmax: treat it as linear for gain purposes.
        acts = [*activations, "identity"]
        for layer, act in zip(linears, acts):
            gain_name = _GAIN_NAME[act]
            if init == "kaiming":
                nonlin = gain_name if gain_name in ("relu", "leaky_relu") else "linear"
                nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlin)
            elif init == "xavier":
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(gain_name))
            elif init == "normal":
                nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
