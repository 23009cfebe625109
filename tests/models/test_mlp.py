import pytest
import torch
from torch import nn

from mlplab.models.dropout import Dropout
from mlplab.models.mlp import ACTIVATIONS, MLP, ResidualBlock


def test_shapes_and_parameter_count() -> None:
    net = MLP(784, 10, hidden_sizes=[128, 64])
    assert net(torch.zeros(5, 784)).shape == (5, 10)
    expected = (784 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_per_layer_activations_and_dropout_in_order() -> None:
    net = MLP(20, 3, hidden_sizes=[13, 8], activation=["relu", "sigmoid"], dropout=[0.1, 0.0])
    kinds = [type(m) for m in net.net]
    assert kinds == [nn.Linear, nn.ReLU, Dropout, nn.Linear, nn.Sigmoid, nn.Linear]
    assert net.net[2].p == pytest.approx(0.1)


def test_notes_network_has_bias_only_on_output() -> None:
    net = MLP(20, 3, hidden_sizes=[13, 8], activation=["relu", "sigmoid"], bias=False)
    linears = net.linears()
    assert [layer.bias is None for layer in linears] == [True, True, False]
    assert sum(p.numel() for p in net.parameters()) == 20 * 13 + 13 * 8 + 8 * 3 + 3


def test_list_length_must_match_hidden_sizes() -> None:
    with pytest.raises(ValueError, match="activation"):
        MLP(4, 2, hidden_sizes=[8, 8, 8], activation=["relu", "tanh"])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_builds_and_runs(name: str) -> None:
    net = MLP(6, 3, hidden_sizes=[5], activation=name)
    assert torch.isfinite(net(torch.randn(4, 6))).all()


@pytest.mark.parametrize("norm, layer", [("batchnorm", nn.BatchNorm1d), ("layernorm", nn.LayerNorm)])
def test_norm_follows_each_linear(norm: str, layer: type) -> None:
    net = MLP(6, 3, hidden_sizes=[5, 4], norm=norm)
    assert sum(isinstance(m, layer) for m in net.net) == 2


def test_input_dropout_comes_first_and_log_softmax_last() -> None:
    net = MLP(6, 3, hidden_sizes=[5], input_dropout=0.2, log_softmax=True)
    assert isinstance(net.net[0], nn.Dropout) and isinstance(net.net[-1], nn.LogSoftmax)
    out = net.eval()(torch.randn(7, 6))
    assert torch.allclose(out.exp().sum(1), torch.ones(7), atol=1e-5)


def test_inits() -> None:
    torch.manual_seed(0)
    net = MLP(1000, 10, hidden_sizes=[500], init="normal", init_std=0.01)
    w = net.linears()[0].weight
    assert w.std().item() == pytest.approx(0.01, rel=0.05)
    assert (net.linears()[0].bias == 0).all()
    net = MLP(1000, 10, hidden_sizes=[500], init="kaiming")
    assert net.linears()[0].weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.05)
    net = MLP(1000, 10, hidden_sizes=[500], activation="tanh", init="xavier")
    bound = 5 / 3 * (6 / 1500) ** 0.5
    assert net.linears()[0].weight.abs().max().item() <= bound + 1e-6


def test_cpu_dropout_keeps_the_right_share_scaled_to_the_same_mean() -> None:
    drop = Dropout(0.2)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    # 10^6 draws: the kept share's std is 4e-4, so 0.8 ± 0.002 fails only for a wrong mask.
    assert abs(kept.float().mean().item() - 0.8) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 65536 / (65536 - round(0.2 * 65536))))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the same mask and scale
    # Independent draws: the rows' kept shares vary as binomial(1000, 0.8)/1000 would (the
    # ratio's std is 0.045), and neighbours (which share 64-bit words) are uncorrelated (std 0.0014).
    k = kept.float()
    assert 0.8 < k.mean(1).var().item() / (0.16 / 1000) < 1.2
    assert abs(torch.corrcoef(torch.stack([k.flatten()[0::2], k.flatten()[1::2]]))[0, 1].item()) < 0.01
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded by torch's generator
    assert not torch.equal(drop(x), y)


def test_dropout_is_identity_in_eval_and_all_zero_at_p_one() -> None:
    x = torch.randn(7, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    assert torch.equal(Dropout(0.0)(x), x)


def test_residual_blocks_add_identity_paths_at_the_last_width() -> None:
    net = MLP(6, 3, hidden_sizes=[8, 5], blocks=2, dropout=[0.0, 0.3], activation=["tanh", "gelu"])
    blocks = [m for m in net.net if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 and isinstance(net.net[-2], nn.LayerNorm)
    assert all(isinstance(b.act, nn.GELU) and b.drop.p == pytest.approx(0.3) for b in blocks)
    assert [tuple(m.weight.shape) for m in net.linears()] == [(8, 6), (5, 8), *[(5, 5)] * 4, (3, 5)]
    # A block whose second layer is zero is the identity: the input passes through the sum.
    block = blocks[0].eval()
    nn.init.zeros_(block.fc2.weight)
    nn.init.zeros_(block.fc2.bias)
    x = torch.randn(4, 5)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.fc2.weight.fill_(0.1)
    assert not torch.allclose(block(x), x)


def test_residual_blocks_need_a_hidden_layer_and_take_inits() -> None:
    with pytest.raises(ValueError, match="blocks=1"):
        MLP(6, 3, hidden_sizes=[], blocks=1)
    net = MLP(6, 3, hidden_sizes=[4], blocks=1, init="kaiming")
    assert all((layer.bias == 0).all() for layer in net.linears())
    assert len(net.linears()) == 4
