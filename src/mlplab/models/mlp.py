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
                f"{key}={list(value)}: a per-layer list needs {n_layers} {'entry' if n_layers == 1 else 'entries'}, "
                f"one per hidden layer in hidden_sizes"
            )
        return list(value)
    return [value] * n_layers


class ResidualBlock(nn.Module):
    """x + Linear(dropout(activation(Linear(LayerNorm(x))))), one width throughout.

    Pre-norm with an identity path (He et al. 2016, "Identity mappings"): the sum keeps a
    direct route for the gradient, so depth adds layers without the slower, worse fits of a
    deep plain stack (three 768-wide plain layers were behind two 1024-wide ones on
    Fashion-MNIST, docs/recipes.md).
    """

    def __init__(self, width: int, activation: str, dropout: float, bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.drop = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class MLP(nn.Module):
    """Linear → [norm] → activation → [dropout] per hidden layer, then a linear head.

    With `blocks > 0`, that many `ResidualBlock`s of the last hidden layer's width, activation
    and dropout follow the hidden layers, and a LayerNorm comes before the head (the blocks'
    sum is not normalised otherwise).

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
        blocks: int = 0,
        log_softmax: bool = False,
    ) -> None:
        super().__init__()
        n = len(hidden_sizes)
        if blocks and not n:
            raise ValueError(f"blocks={blocks}: residual blocks need at least one hidden layer to set their width")
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
        for _ in range(blocks):
            layers.append(ResidualBlock(width, activations[-1], dropouts[-1], bias=bias))
        if blocks:
            layers.append(nn.LayerNorm(width))
        # The output layer keeps its bias even when hidden layers drop theirs: the notes'
        # 20→13→8→3 network does exactly that.
        layers.append(nn.Linear(width, n_classes))
        if log_softmax:
            layers.append(nn.LogSoftmax(dim=1))
        self.net = nn.Sequential(*layers)
        self._init_weights(init, activations, blocks, init_std)

    def _init_weights(self, init: str, activations: list[str], blocks: int, std: float) -> None:
        if init == "default":
            return
        linears = self.linears()
        # A block's second layer feeds a sum, and the head's "activation" is the softmax:
        # both are treated as linear for gain purposes.
        acts = [*activations, *[activations[-1], "identity"] * blocks, "identity"]
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
        """Every Linear in forward order, residual blocks' included."""
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
