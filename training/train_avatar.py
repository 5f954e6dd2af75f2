#!/usr/bin/env python
"""Train a DiffusionAvatar (paper 000) on one person's frames with accelerate.

    python training/train_avatar.py --config training/configs/avatar_tiny.yaml
    python training/train_avatar.py --config training/configs/avatar_tiny.yaml --resume latest

The same loop, options and exact resume as train_animator.py (the family comes from the config's
model.kind: onehead-avatar). `onehead avatar train VIDEO_OR_DATASET --out DIR` does the same from
one command, preparing a raw video first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_animator import main  # noqa: E402  (one entry point for every family)

if __name__ == "__main__":
    sys.exit(main())
