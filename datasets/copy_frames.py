#!/usr/bin/env python
"""Copy a range of frames of a prepared sequence into a new sequence folder (see datasets/README.md).

    python datasets/copy_frames.py SOURCE OUT --frames START:STOP

For example, hold out the first half of the sample clip and train on the second:

    python datasets/copy_frames.py out/data/carphone/carphone out/data/carphone_train/carphone --frames 60:120
    python datasets/copy_frames.py out/data/carphone/carphone out/data/carphone_test/carphone --frames 0:60
"""

from __future__ import annotations

import argparse
import sys

from onehead.errors import OneheadError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="sequence folder to read (it is never written)")
    parser.add_argument("out", help="new sequence folder to write (must not exist)")
    parser.add_argument("--frames", required=True, help="START:STOP, the frames to keep (STOP excluded)")
    args = parser.parse_args(argv)
    try:
        start, stop = (int(v) for v in args.frames.split(":"))
    except ValueError:
        parser.error(f"--frames {args.frames!r}: use START:STOP, e.g. 60:120")

    from onehead.data.sequence import copy_frames

    try:
        out = copy_frames(args.source, args.out, start, stop)
    except OneheadError as exc:
        print(f"copy_frames: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
