#!/usr/bin/env python
"""Train onehead's Animator (Gaussian-embedding diffusion) in two stages with accelerate.

    python training/train_animator.py --config training/configs/tiny.yaml
    python training/train_animator.py --config training/configs/tiny.yaml --resume latest
    python training/train_animator.py --config training/configs/tiny_stage2.yaml
    accelerate launch --num_processes 8 training/train_animator.py --config training/configs/base.yaml

A thin entry point: the loop, config, checkpoints and exact resume live in onehead.training, the
Animator-specific parts in onehead.training.gaussian_diffusion. training/README.md walks through
both stages; the YAML files in training/configs are the examples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train onehead's Animator (stage 1 or 2) with accelerate.")
    p.add_argument("--config", required=True, help="YAML config (examples in training/configs/)")
    p.add_argument("--output-dir", default=None, help="overrides train.output_dir")
    p.add_argument("--resume", default=None, metavar="latest|DIR",
                   help="continue from the newest checkpoint of the output dir, or from a checkpoint folder")
    p.add_argument("--max-steps", type=int, default=None, help="overrides train.max_steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.learning_rate=1e-4 (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from onehead.errors import OneheadError
    from onehead.training import load_config, train

    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    try:
        config = load_config(args.config, overrides)
        result = train(config, args.resume)
    except OneheadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one summary line, from the main process
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
