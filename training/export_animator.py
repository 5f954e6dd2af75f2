#!/usr/bin/env python
"""Export a training checkpoint as a model folder, with inference settings.

    python training/export_animator.py RUN/checkpoints/step_001000 OUT [--raw] [--set key=value ...]

Takes the EMA weights (ema/) unless --raw, loads them as an Animator (so a broken checkpoint fails
here, not later), applies the --set values to its config (inference settings such as
default_steps, initial_latent, inference_domain, background, background_margin) and saves OUT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onehead.errors import OneheadError


def parse_value(text: str):
    """JSON when it parses (numbers, true/false, null), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint folder (RUN/checkpoints/step_N)")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value, e.g. --set default_steps=1")
    args = parser.parse_args(argv)

    from onehead.pipelines.animator import Animator

    source = Path(args.checkpoint) if args.raw else Path(args.checkpoint) / "ema"
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"export_animator: --set {item}: use KEY=VALUE", file=sys.stderr)
            return 2
        overrides[key] = parse_value(value)
    try:
        animator = Animator.from_pretrained(source, overrides=overrides)
        animator.save_pretrained(args.out)
    except OneheadError as exc:
        print(f"export_animator: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} from {source}" + (f" with {overrides}" if overrides else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
