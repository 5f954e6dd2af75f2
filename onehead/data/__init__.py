"""onehead's data: images and video I/O, the tracking file, the sequence format, datasets, synthetic heads.

    from onehead.data import load_tracking, open_sequence, ReenactmentDataset, synthesize

Names are imported on first use (the renderer behind `synthesize` loads only when asked).
"""

_LAZY = {
    "load_image": "images", "save_image": "images",
    "read_video": "video", "read_frames": "video", "write_video": "video", "probe_video": "video",
    "Tracking": "tracking_file", "load_tracking": "tracking_file",
    "DOMAINS": "sequence", "Sequence": "sequence", "SequenceMeta": "sequence", "View": "sequence",
    "open_sequence": "sequence", "list_sequences": "sequence", "read_pairs": "sequence",
    "ReenactmentDataset": "datasets", "open_dataset": "datasets",
    "SynthOptions": "synthetic", "synthesize": "synthetic",
    "crop_affine": "prepare", "crop_boxes": "prepare", "crop_tracking": "prepare",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"onehead.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onehead.data' has no attribute {name!r}")
