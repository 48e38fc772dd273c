import copy

import pytest
import torch

from ratgan.segmentation import train as seg_train
from ratgan.segmentation.metrics import make_loss
from ratgan.segmentation.unet import PRESETS, UNetConfig, build_unet, pooling_factors


def test_pooling_follows_the_paper_for_64x64x40():
    assert pooling_factors((64, 64, 40), 4) == ((2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 1))
    assert UNetConfig(input_shape=(64, 64, 40)).pools[-1] == (2, 2, 1)
    assert PRESETS["full"] == (64, 128, 256, 512, 1024)


def test_unet_output_shape_and_roundtrip_config():
    cfg = UNetConfig(channels=(4, 8, 16), input_shape=(16, 16, 8))
    net = build_unet(cfg)
    out = net(torch.randn(2, 1, 16, 16, 8))
    assert out.shape == (2, 4, 16, 16, 8)
    again = UNetConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.to_dict().items()}
    )
    assert again == cfg


def test_training_stops_at_the_step_cap():
    from ratgan.segmentation.train import TrainSettings, segment, train_segmenter

    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8, 4) * 2 - 1
    y = (x > 0.3).long() * 2
    cfg = UNetConfig(channels=(4, 8), input_shape=(8, 8, 4))
    res = train_segmenter(
        x,
        y,
        x[:2],
        y[:2],
        cfg,
        TrainSettings(max_epochs=50, max_steps=5, batch_size=4, patience=50),
    )
    assert res.steps == 5 and res.epochs == 3  # 2 steps per epoch, the third cut short
    assert res.best_val_loss == min(h["val_loss"] for h in res.history)
    out = segment(res.model, torch.rand(1, 1, 12, 12, 6), box=((2, 10), (2, 10), (1, 5)))
    assert out.shape == (1, 1, 12, 12, 6) and out[0, 0, 0].max() == 0


def test_early_stopping_restores_the_weights_of_the_best_validation_epoch(monkeypatch):
    """The returned (and the saved) network is the one of the best epoch, not the last one.

    The validation losses are scripted (epoch 2 best, then two worse epochs: patience 2 stops
    after epoch 4), and a snapshot of the weights is taken at every validation, so the
    expected weights are known independently of the training code's own bookkeeping.
    """
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8, 4) * 2 - 1
    y = (x > 0.3).long() * 2
    x_val, y_val = x[:2], y[:2]
    scripted = iter([0.5, 0.3, 0.4, 0.6, 0.1, 0.1])  # the last two would never be reached
    snapshots, real_losses = [], []
    real_validation = seg_train.validation_loss

    def recording_validation(model, *args, **kwargs):
        snapshots.append(copy.deepcopy(model.state_dict()))
        real_losses.append(real_validation(model, *args, **kwargs))
        return next(scripted)

    monkeypatch.setattr(seg_train, "validation_loss", recording_validation)
    cfg = UNetConfig(channels=(4, 8), input_shape=(8, 8, 4))
    res = seg_train.train_segmenter(
        x, y, x_val, y_val, cfg, seg_train.TrainSettings(max_epochs=20, patience=2, batch_size=4)
    )
    assert res.epochs == 4 and len(snapshots) == 4
    assert res.best_epoch == 2 and res.best_val_loss == 0.3

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    final = res.model.state_dict()
    assert same(final, snapshots[1])
    assert not same(final, snapshots[3])  # training moved on after the best epoch

    # Re-evaluated from scratch, the returned network scores what epoch 2's weights scored.
    res.model.eval()
    with torch.no_grad():
        loss = float(make_loss("dice")(res.model(x_val).float(), y_val))
    assert abs(loss - real_losses[1]) < 1e-6
    assert abs(loss - real_losses[3]) > 1e-6


def test_a_validation_loss_never_finite_is_an_error_not_the_untrained_network():
    # With NaN in every epoch (weights blown up by lr=inf) no epoch ever became "best", and
    # the untrained starting weights were returned and scored as if trained.
    from ratgan.errors import RatganError
    from ratgan.segmentation.train import TrainSettings, train_segmenter

    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8, 4) * 2 - 1
    y = (x > 0.3).long() * 2
    cfg = UNetConfig(channels=(4, 8), input_shape=(8, 8, 4))
    settings = TrainSettings(max_epochs=3, batch_size=4, patience=5, lr=float("inf"))
    with pytest.raises(RatganError, match="validation loss was not finite in any of its 3"):
        train_segmenter(x, y, x[:2], y[:2], cfg, settings, desc="test 1, seed 0")
