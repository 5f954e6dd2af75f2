#!/usr/bin/env python
"""Export a training checkpoint as a model folder, with inference settings.

    python training/export_animator.py RUN/checkpoints/step_001000 OUT [--raw] [--half] [--zero-correction] [--set key=value ...]

Takes the EMA weights (ema/) unless --raw, loads them as an Animator (so a broken checkpoint fails
here, not later), applies the --set values (inference settings: steps, initial_latent, domain,
background, background_margin, window, window_overlap, seed; the older names default_steps and
inference_domain work too), writes OUT, loads OUT back and checks that its weights and settings
are the ones exported before reporting success. --half stores the weights as float16 (half the
size; they load as float32). --zero-correction zeroes a warp-correcting model's UNet output layer:
the folder then renders exactly its warp (an ablation, or a fresh start for further training). A wrong key or value stops with exit code 2 and
one line. The work is onehead.training.gaussian_diffusion.export_model_folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from onehead.errors import OneheadError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint folder (RUN/checkpoints/step_N)")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument("--zero-correction", action="store_true",
                        help="zero the UNet's output layer of a correct_warp model (it renders its warp alone)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change an inference setting, e.g. --set steps=1 (repeatable)")
    args = parser.parse_args(argv)

    from onehead.training.gaussian_diffusion import export_model_folder, inference_overrides

    source = Path(args.checkpoint) if args.raw else Path(args.checkpoint) / "ema"
    try:
        settings = inference_overrides(args.overrides)
        export_model_folder(source, Path(args.out), settings, half=args.half,
                            zero_correction=args.zero_correction)
    except OneheadError as exc:
        print(f"export_animator: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} from {source}" + (f" with {settings}" if settings else "") + " (loaded back and checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
