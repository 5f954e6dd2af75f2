"""`onehead eval`: models and baselines on the same frames, scored with onehead.metrics.

tasks.py picks the frames of a dataset (self, cross), methods.py knows what can run (baselines and
model families), baselines.py holds the floors, run.py scores everything and writes the report;
real.py is the real task (portraits x a driving video, no ground truth) with the same report shape;
views.py turns references on a yaw sweep. landmarks.py and tracking.py score the tracker itself:
against labelled images, and against the exact truth of synthetic heads.
"""
