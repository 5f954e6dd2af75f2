"""`onehead eval`: models and baselines on the same frames, scored with onehead.metrics.

tasks.py picks the frames, methods.py knows what can run (baselines and model families),
baselines.py holds the floors, run.py scores everything and writes the report.
"""
