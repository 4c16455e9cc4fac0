"""Style transfer with perceptual_loss: Gatys et al. (optimisation) and Johnson et al. (feed-forward).

python -m examples.style_transfer.optimize   # configs/style_transfer.yaml
python -m examples.style_transfer.train      # configs/fast_style_transfer.yaml
"""
