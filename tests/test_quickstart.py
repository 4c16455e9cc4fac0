"""README's first command runs examples.quickstart: every loss must go down in it."""

from __future__ import annotations

from examples import quickstart


def test_quickstart_losses_go_down(capsys) -> None:
    assert quickstart.main(["--steps", "6", "--size", "32", "--batch", "2", "--weights", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "Backbone weights: imagenet" in out
    assert out.count(" yes ") == 4


def test_synthetic_images_are_valid_images() -> None:
    images = quickstart.synthetic_images(3, 24)
    assert images.shape == (3, 3, 24, 24)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
