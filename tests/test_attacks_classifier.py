"""The evaluation classifiers: the basic CNN learns, is cached by training set, and is undefended."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from attacks_toys import data, tensors

import popvae.attacks.classifier as classifier
from popvae.attacks.pgd import pgd


def test_cnn_fits_caches_and_falls_to_pgd(tmp_path, monkeypatch):
    train = data(384, seed=0)
    cnn = classifier.cached_cnn(train, tmp_path, epochs=10)
    x, y = tensors(data(200, seed=2))
    assert classifier.accuracy(cnn, x, y) > 0.9
    assert len(list(tmp_path.glob("cnn-*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached CNN must be loaded, not refit")

    monkeypatch.setattr(classifier, "fit", no_training)
    again = classifier.cached_cnn(train, tmp_path, epochs=10)
    for a, b in zip(cnn.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert cnn.features(x[:4]).shape == (4, cnn.num_features)

    loss = lambda xa: F.cross_entropy(cnn(xa), y, reduction="none")
    x_adv = pgd(loss, x, eps=0.3, steps=10, step_size=0.075)
    assert classifier.accuracy(cnn, x_adv, y) < 0.05


def test_latent_mlp_learns_codes():
    z = torch.randn(300, 6)
    y = (z[:, 0] > 0).long() + 2 * (z[:, 1] > 0).long()
    net = classifier.fit(classifier.LatentMLP(6, 4), z, y, epochs=30, batch_size=64, lr=3e-3)
    assert classifier.accuracy(net, z, y) > 0.9 and not net.training
