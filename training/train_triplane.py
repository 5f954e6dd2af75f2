#!/usr/bin/env python
"""Train onehead's tri-plane Animator (paper 004, stages 1 and 2) with accelerate.

    python training/train_triplane.py --config training/configs/triplane_tiny.yaml
    python training/train_triplane.py --config training/configs/triplane_tiny.yaml --resume latest
    python training/train_triplane.py --config training/configs/triplane_tiny.yaml \
        --set train.stage=2 --set train.init_from=RUN/checkpoints/step_XXXXXX/ema --set train.output_dir=RUN2

The same loop, options and exact resume as train_animator.py (the family comes from the config's
model.kind: onehead-triplane; the losses are defined in onehead.training.triplane). Stage 2
fine-tunes only the super-resolution, with EG3D's dual discriminator, from a stage-1 model.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_animator import main  # noqa: E402  (one entry point for every family)

if __name__ == "__main__":
    sys.exit(main())
