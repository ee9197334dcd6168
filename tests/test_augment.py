from __future__ import annotations

import torch

from microcli.augment import AugmentConfig, augment

OFF = AugmentConfig(flips=False, rot90=False, scale=0, brightness=0, contrast=0, gamma=0, noise=0, blur=0)


def symmetries(img: torch.Tensor) -> list[torch.Tensor]:
    t = img.transpose(-1, -2)
    return [v for base in (img, t) for v in (base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2))]


def test_everything_off_is_the_identity():
    x = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(augment(x, OFF, torch.Generator().manual_seed(0)), x)


def test_flips_and_turns_are_exact_symmetries_and_all_eight_occur():
    x = torch.rand(1, 2, 12, 12).expand(256, 2, 12, 12).contiguous()
    cfg = AugmentConfig(flips=True, rot90=True, scale=0, brightness=0, contrast=0, gamma=0, noise=0, blur=0)
    out = augment(x, cfg, torch.Generator().manual_seed(1))
    seen = set()
    for img in out:
        matches = [k for k, s in enumerate(symmetries(x[0])) if torch.allclose(img, s, atol=1e-5)]
        assert matches, "output is not an exact flip/rotation of the input"
        seen.add(matches[0])
    assert seen == set(range(8))


def test_same_generator_same_batch_and_values_stay_sane():
    x = torch.rand(8, 1, 32, 32)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert (a - x).abs().mean() > 0.01 and abs(a.mean() - x.mean()) < 0.1
