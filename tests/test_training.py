"""Negative sampling and the training loop's bookkeeping: best-on-validation
snapshots, early stopping, keeping an earlier stage's model, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import operator_model

from legcf_core.errors import DeviceError, TrainingError
from legcf_core.graph import bipartite_adjacency
from legcf_core.layers.codebook import OperatorModel
from legcf_core.partition import initial_assignment, random_partition
from legcf_core.runtime import resolve_device
from legcf_core.schedule import scheduled_lr
from legcf_core.training import NegativeSampler, TrainConfig, batch_count, fit, validate

CPU = torch.device("cpu")


def toy_problem(seed: int = 0, n_users: int = 20, n_items: int = 30):
    rng = np.random.default_rng(seed)
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    valid_mask = (rng.random((n_users, n_items)) < 0.1) & (train.toarray() == 0)
    valid = sp.csr_matrix(valid_mask.astype(np.float32))
    return train, valid


def toy_model(train: sp.csr_matrix, c: int = 6, d: int = 8, seed: int = 0) -> OperatorModel:
    n = train.shape[0] + train.shape[1]
    anchors = random_partition(n, c, seed).parts
    S = initial_assignment(anchors, c, 2, 0.5, seed)
    codebook = torch.from_numpy(np.random.default_rng(seed).normal(scale=0.1, size=(c, d)).astype(np.float32))
    return operator_model(bipartite_adjacency(train), train.shape[0], S, codebook, 2, 1, CPU)


def test_sampler_covers_every_positive_once_and_samples_true_negatives():
    train, _ = toy_problem(1)
    sampler = NegativeSampler(train, negatives=4, seed=3)
    seen = []
    dense = train.toarray()
    for users, items, negatives in sampler.batches(7):
        assert users.size <= 7 and negatives.shape == (users.size, 4)
        assert np.all(dense[users, items] == 1)
        assert not np.any(dense[users[:, None], negatives])  # never a training item of that user
        seen += list(zip(users.tolist(), items.tolist(), strict=True))
    coo = train.tocoo()
    assert sorted(seen) == sorted(zip(coo.row.tolist(), coo.col.tolist(), strict=True))
    assert batch_count(train.nnz, 7) == -(-train.nnz // 7)


def test_fit_keeps_the_best_validated_state():
    train, valid = toy_problem(2)
    model = toy_model(train)
    config = TrainConfig(epochs=4, batch_size=16, lr=0.05, patience=10, seed=1)
    states = []
    result = fit(
        model, train, valid, config, on_epoch=lambda log: states.append(model.codebook.detach().clone())
    )
    logged = [log.valid["ndcg@20"] for log in result.history]
    assert len(result.history) == len(states) == 4
    assert result.best_valid["ndcg@20"] == max(logged)
    assert result.best_epoch == 1 + int(np.argmax(logged))
    assert torch.equal(result.best_state["codebook"], states[result.best_epoch - 1])
    assert not torch.equal(states[0], states[-1])  # training moved the codebook
    # The snapshot is the codebook that scored best: restoring it reproduces the score.
    model.codebook.data.copy_(result.best_state["codebook"])
    assert validate(model, train, valid)["ndcg@20"] == pytest.approx(result.best_valid["ndcg@20"], abs=1e-9)


def test_fit_keeps_an_unbeaten_baseline_and_stops_early():
    train, valid = toy_problem(3)
    model = toy_model(train)
    baseline_codebook = torch.full_like(model.codebook, 0.5)
    baseline_assignment = model.assignment.copy()
    baseline = ({"ndcg@20": 2.0}, {"codebook": baseline_codebook}, baseline_assignment)  # cannot be beaten
    config = TrainConfig(epochs=10, batch_size=64, lr=0.05, patience=2, seed=1)
    result = fit(model, train, valid, config, update_every=1, baseline=baseline)
    assert result.best_epoch == 0
    assert result.stopped_early and len(result.history) == 2
    assert torch.equal(result.best_state["codebook"], baseline_codebook)
    assert (result.best_assignment != baseline_assignment).nnz == 0
    assert all(log.updated for log in result.history)


def test_update_every_m_epochs():
    train, valid = toy_problem(4)
    model = toy_model(train)
    config = TrainConfig(epochs=5, batch_size=64, lr=0.01, patience=10, seed=1)
    result = fit(model, train, valid, config, update_every=2)
    # Algorithm 1: update when epoch_index mod m == 0, epoch_index counting from 0.
    assert [log.updated for log in result.history] == [True, False, True, False, True]


def test_cosine_schedule_falls_from_lr_towards_zero():
    config = TrainConfig(epochs=10, lr=0.05, lr_schedule="cosine")
    rates = [scheduled_lr(config, epoch) for epoch in range(1, 11)]
    assert rates[0] == 0.05 and rates[5] == pytest.approx(0.025)
    assert all(a > b > 0 for a, b in zip(rates, rates[1:], strict=False))
    assert scheduled_lr(TrainConfig(epochs=10, lr=0.05), 5) is None  # plateau: validation moves it


def test_a_fixed_schedule_changes_training_without_validation():
    train, _ = toy_problem(6)
    finals = {}
    for schedule in ("plateau", "cosine"):
        for epochs in (1, 3):
            model = toy_model(train)
            config = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=1, lr_schedule=schedule)
            finals[schedule, epochs] = fit(model, train, None, config).best_state["codebook"]
    assert torch.equal(finals["plateau", 1], finals["cosine", 1])  # the first epoch runs at lr
    assert not torch.allclose(finals["plateau", 3], finals["cosine", 3])  # later ones slower


def test_divergence_is_a_training_error():
    train, valid = toy_problem(5)
    model = toy_model(train)
    model.codebook.data[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="lower the learning rate") as raised:
        fit(model, train, valid, TrainConfig(epochs=1, batch_size=64, seed=1))
    assert raised.value.field == "lr"
    assert raised.value.render({"lr": "--lr"}).endswith("(--lr)")


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")
