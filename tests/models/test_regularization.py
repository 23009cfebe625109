import pytest
import torch

from mlplab.models.classifier import Classifier
from mlplab.models.regularization import apply_max_norm, l1_penalty, l2_penalty, weight_matrices


def _model(**kw) -> Classifier:
    torch.manual_seed(0)
    return Classifier(in_features=4, n_classes=3, hidden_sizes=[5], norm="batchnorm", **kw)


def test_penalties_cover_weight_matrices_only_and_match_hand_computation() -> None:
    m = _model()
    weights = weight_matrices(m)
    assert [tuple(w.shape) for w in weights] == [(5, 4), (3, 5)]  # no biases, no norm params
    w1, w2 = (w.detach() for w in weights)
    hand_l1 = sum(abs(v) for v in w1.flatten().tolist()) + sum(abs(v) for v in w2.flatten().tolist())
    hand_l2 = 0.5 * (sum(v * v for v in w1.flatten().tolist()) + sum(v * v for v in w2.flatten().tolist()))
    assert l1_penalty(weights).item() == pytest.approx(hand_l1, rel=1e-5)
    assert l2_penalty(weights).item() == pytest.approx(hand_l2, rel=1e-5)


def test_objective_adds_scaled_penalties_to_data_loss() -> None:
    m = _model(l1=1e-2, l2=1e-1).eval()
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    _, data_loss, total, l1, l2 = m.objective(x, y)
    data = m.data_loss(m(x), y)
    w = weight_matrices(m)
    expected = data + 1e-2 * l1_penalty(w) + 1e-1 * l2_penalty(w)
    assert data_loss.item() == pytest.approx(data.item(), rel=1e-6)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert l1.item() == pytest.approx(1e-2 * l1_penalty(w).item(), rel=1e-5)
    assert l2.item() == pytest.approx(1e-1 * l2_penalty(w).item(), rel=1e-5)


def test_max_norm_caps_each_unit() -> None:
    w = torch.randn(6, 10) * 5
    small = torch.full((1, 10), 0.01)
    w = torch.cat([w, small])
    apply_max_norm([w], 2.0)
    norms = w.norm(dim=1)
    assert (norms <= 2.0 + 1e-5).all()
    assert norms[-1].item() == pytest.approx(small.norm().item(), rel=1e-5)  # untouched


def test_nll_and_cross_entropy_losses_agree() -> None:
    torch.manual_seed(0)
    ce = Classifier(in_features=4, n_classes=3, hidden_sizes=[5], loss="cross_entropy")
    torch.manual_seed(0)
    nll = Classifier(in_features=4, n_classes=3, hidden_sizes=[5], loss="nll")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    assert ce.data_loss(ce(x), y).item() == pytest.approx(nll.data_loss(nll(x), y).item(), rel=1e-6)
    ce.label_smoothing = nll.label_smoothing = 0.1
    assert ce.data_loss(ce(x), y).item() == pytest.approx(nll.data_loss(nll(x), y).item(), rel=1e-6)
