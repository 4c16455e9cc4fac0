"""``python -m perceptual_loss``: the same as the ``perceptual-loss`` console script."""

from .cli import main

raise SystemExit(main())
