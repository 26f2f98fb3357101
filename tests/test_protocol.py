import numpy as np
import pytest
import torch

from medbench.core.errors import MedbenchError
from medbench.data import load_dataset
from medbench.data.splits import Split
from medbench.distill.contract import CondensedSet
from medbench.evaluation import Protocol, classification_metrics, evaluate, model_seeds
from medbench.evaluation.protocol import train_models
from medbench.nn.models import ModelSpec

SMALL = Protocol(width=8, epochs=30, eval_models=3, batch_size=16, lr=0.05)


def test_a_separable_dataset_is_learned(toy_npz):
    splits = load_dataset(str(toy_npz))
    condensed = CondensedSet(splits.normalize(splits.train.images), splits.train.labels)
    scores = evaluate(condensed, splits, SMALL, seed=0)
    assert len(scores) == 3 and len({s.seed for s in scores}) == 3
    assert min(s.test["accuracy"] for s in scores) >= 0.9
    assert all(set(s.test) == {"accuracy", "balanced_accuracy", "macro_f1", "auc"} for s in scores)


class _Recorder:
    """Wraps a Split's images so every read is logged with the phase it happened in."""

    def __init__(self, split, name, log):
        self.split, self.name, self.log = split, name, log

    def __getattr__(self, item):
        if item == "images":
            self.log.append(self.name)
        return getattr(self.split, item)

    def __len__(self):
        return len(self.split)


def test_test_split_is_read_only_after_all_training(toy_npz, monkeypatch):
    import medbench.evaluation.protocol as protocol_module

    splits = load_dataset(str(toy_npz))
    log: list[str] = []
    real_train = protocol_module.train_network

    def logged_train(*args, **kwargs):
        log.append("train")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(protocol_module, "train_network", logged_train)
    object.__setattr__(splits, "test", _Recorder(splits.test, "test", log))
    object.__setattr__(splits, "val", _Recorder(splits.val, "val", log))
    condensed = CondensedSet(splits.normalize(splits.train.images[:6]), splits.train.labels[:6])
    evaluate(condensed, splits, Protocol(width=4, epochs=2, eval_models=2), seed=1)
    assert log == ["train", "train", "val", "test"]  # each split read once, for all networks


def test_learned_lr_is_used_unless_disabled(toy_npz):
    splits = load_dataset(str(toy_npz))
    condensed = CondensedSet(splits.normalize(splits.train.images[:3]), splits.train.labels[:3], lr=0.123)
    tiny = Protocol(width=4, epochs=1, eval_models=1)
    assert evaluate(condensed, splits, tiny, seed=0)[0].lr == pytest.approx(0.123)
    fixed = Protocol(width=4, epochs=1, eval_models=1, use_learned_lr=False)
    assert evaluate(condensed, splits, fixed, seed=0)[0].lr == pytest.approx(0.01)


def test_same_seed_same_numbers_and_different_seeds_differ(toy_npz):
    splits = load_dataset(str(toy_npz))
    condensed = CondensedSet(splits.normalize(splits.train.images[:9]), splits.train.labels[:9])
    p = Protocol(width=4, epochs=5, eval_models=2)
    a = evaluate(condensed, splits, p, seed=3)
    b = evaluate(condensed, splits, p, seed=3)
    assert [s.test for s in a] == [s.test for s in b]
    assert model_seeds(3, 2) != model_seeds(4, 2)


def test_metrics_on_an_imbalanced_split():
    labels = np.array([0] * 9 + [1])
    always_zero = np.tile([0.9, 0.1], (10, 1))
    scores = classification_metrics(labels, always_zero)
    assert scores["accuracy"] == pytest.approx(0.9)
    assert scores["balanced_accuracy"] == pytest.approx(0.5)  # the majority rate does not impress it
    assert scores["macro_f1"] == pytest.approx((2 * 0.9 / 1.9) / 2)


def test_auc_is_nan_with_a_single_class_present():
    probs = torch.softmax(torch.randn(4, 3), 1).numpy()
    assert np.isnan(classification_metrics(np.zeros(4, int), probs)["auc"])


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": -1.0}, {"eval_models": 0}, {"augment": "mixup"}])
def test_bad_protocol_values(bad):
    from medbench.core import hparams

    with pytest.raises(MedbenchError):
        hparams.build(Protocol, bad)


def test_split_class_counts():
    split = Split(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 1, 2, 2]))
    assert split.class_counts(4) == [1, 2, 2, 0]


def test_zca_sets_are_scored_in_their_whitened_space(toy_npz, monkeypatch):
    import medbench.evaluation.protocol as protocol_module
    from medbench.nn.whitening import ZCA

    splits = load_dataset(str(toy_npz))
    dim = splits.channels * splits.size * splits.size
    zca = ZCA(torch.full((dim,), 0.5), 2 * torch.eye(dim))
    condensed = CondensedSet(splits.normalize(splits.train.images[:3]), splits.train.labels[:3],
                             extras={"zca_mean": zca.mean, "zca_matrix": zca.matrix})
    seen = []
    real_predict = protocol_module.predict_proba

    def spy(model, images, *, prepare=None, batch_size=1024):
        seen.append(prepare(images[:2]))
        return real_predict(model, images, prepare=prepare, batch_size=batch_size)

    monkeypatch.setattr(protocol_module, "predict_proba", spy)
    evaluate(condensed, splits, Protocol(width=4, epochs=1, eval_models=1), seed=0)
    expected = 2 * (splits.normalize(splits.val.images[:2]) - 0.5)
    assert torch.allclose(seen[0], expected, atol=1e-5)


@pytest.mark.parametrize("batching", ["sequential", "vmap"])
def test_dropout_networks_do_not_depend_on_what_ran_before(batching):
    """AlexNet's dropout draws from torch's global RNG; each network seeds it, so a cell's numbers
    are the same whether or not anything else used the RNG first (a grid, a crossarch run...)."""
    images, labels = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])

    def probabilities():
        trained = train_models(images, labels, model_seeds(0, 2), spec=ModelSpec("alexnet", {"hidden": 32}),
                               channels=1, num_classes=2, size=28, epochs=3, lr=0.01, batching=batching)
        return trained.predict_proba(images)

    first = probabilities()
    torch.rand(1000)  # someone else's draws
    assert torch.equal(first, probabilities())
