#!/usr/bin/env python
"""Train onehead's tri-plane Animator (paper 004, stage 1) with accelerate.

    python training/train_triplane.py --config training/configs/triplane_tiny.yaml
    python training/train_triplane.py --config training/configs/triplane_tiny.yaml --resume latest

The same loop, options and exact resume as train_animator.py (the family comes from the config's
model.kind: onehead-triplane; the losses are defined in onehead.training.triplane). Stage 2
(super-resolution with a dual discriminator) is not implemented yet.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_animator import main  # noqa: E402  (one entry point for every family)

if __name__ == "__main__":
    sys.exit(main())
