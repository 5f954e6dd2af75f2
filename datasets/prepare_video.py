#!/usr/bin/env python
"""Turn a real video into onehead's data format (see datasets/README.md).

    python datasets/prepare_video.py VIDEO OUT [--size 512] [--no-matte] [--mp4] [--max-frames N]
    python datasets/prepare_video.py carphone out/data/carphone/carphone --size 256   # the sample clip

Tracks the head model, crops a smoothed square around the face, scales it to --size, mattes the
person with mediapipe's selfie segmentation and writes OUT/meta.json and OUT/cam00/.
"""

from __future__ import annotations

import argparse
import sys

from onehead.errors import OneheadError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="video file or folder of frames ('carphone': the real sample clip)")
    parser.add_argument("out", help="sequence folder to write")
    parser.add_argument("--size", type=int, default=512, help="crop size in pixels (square)")
    parser.add_argument("--no-matte", action="store_true", help="write no masks")
    parser.add_argument("--mp4", action="store_true", help="store frames as frames.mp4 instead of PNGs")
    parser.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    parser.add_argument("--head", default="basic", choices=("basic", "flame"), help="head model")
    parser.add_argument("--flame-dir", default=None, help="FLAME directory (with --head flame)")
    args = parser.parse_args(argv)

    from onehead.pipelines.prepare_video import prepare_video
    from onehead.head.model import load_head_model

    try:
        if args.video == "carphone":
            from onehead.data.samples import carphone_path

            args.video = str(carphone_path())
        head = load_head_model(args.head, args.flame_dir)
        out = prepare_video(args.video, args.out, size=args.size, head=head, matte=not args.no_matte,
                            max_frames=args.max_frames, video=args.mp4)
    except OneheadError as exc:
        print(f"prepare_video: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
