import torch

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
    again = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in cfg.to_dict().items()})
    assert again == cfg


def test_training_stops_at_the_step_cap_and_keeps_the_best_weights():
    from ratgan.segmentation.train import TrainSettings, segment, train_segmenter

    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8, 4) * 2 - 1
    y = (x > 0.3).long() * 2
    cfg = UNetConfig(channels=(4, 8), input_shape=(8, 8, 4))
    res = train_segmenter(x, y, x[:2], y[:2], cfg,
                          TrainSettings(max_epochs=50, max_steps=5, batch_size=4, patience=50))
    assert res.steps == 5 and res.epochs == 3  # 2 steps per epoch, the third cut short
    assert res.best_val_loss == min(h["val_loss"] for h in res.history)
    out = segment(res.model, torch.rand(1, 1, 12, 12, 6), box=((2, 10), (2, 10), (1, 5)))
    assert out.shape == (1, 1, 12, 12, 6) and out[0, 0, 0].max() == 0
