"""Tracking: mediapipe landmarks -> a head-model fit, for one image or a whole video.

    from onehead.tracking import track, TrackOptions
    tracking = track("talking.mp4", options=TrackOptions(progress=False))   # onehead.data.Tracking
"""

from onehead.tracking.tracker import TrackOptions, track, track_frames, track_image

__all__ = ["TrackOptions", "track", "track_frames", "track_image"]
