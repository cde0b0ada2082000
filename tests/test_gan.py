"""Adversarial training parts: hinge losses point the right way, feature matching trains the
generator only, the discriminator sees every scale."""

import torch

from restorer_core.train.gan import (DiscriminatorConfig, MultiScaleDiscriminator, d_hinge_loss,
                                     feature_matching_loss, g_hinge_loss)


def _out(logit: float, feats=()):
    return [(torch.full((2, 1, 4, 4), logit), list(feats))]


def test_hinge_losses_reward_the_right_side():
    assert float(d_hinge_loss(_out(2.0), _out(-2.0))) == 0.0  # confident and right: no loss
    assert float(d_hinge_loss(_out(-1.0), _out(1.0))) == 4.0  # wrong on both sides
    assert float(g_hinge_loss(_out(3.0))) < float(g_hinge_loss(_out(-3.0)))


def test_feature_matching_is_zero_for_identical_features_and_trains_only_the_fake_side():
    real_f = torch.randn(2, 8, 4, 4, requires_grad=True)
    fake_f = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert float(feature_matching_loss(_out(0, [real_f]), _out(0, [real_f.detach()]))) == 0.0
    feature_matching_loss(_out(0, [real_f]), _out(0, [fake_f])).backward()
    assert real_f.grad is None and fake_f.grad is not None and fake_f.grad.abs().sum() > 0


def test_discriminator_scales_and_feature_shapes():
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(DiscriminatorConfig(channels=(8, 16), scales=2))
    out = d(torch.rand(3, 3, 64, 64))
    assert len(out) == 2
    (l0, f0), (l1, f1) = out
    assert l0.shape == (3, 1, 16, 16) and l1.shape == (3, 1, 8, 8)
    assert [f.shape[1] for f in f0] == [8, 16]
