"""The trial record, owned in one place: which fields a trial has (`fields`), which metrics it reports
(`metrics`), how a trial ended (`outcome`), how Ray Tune lays them out on disk (`ray_files`), and the one input-error
type with the exit codes and the guarded command runner (`errors`).

Imported by training (`tune_jobs`, `lora_ext`) and analysis alike; imports neither, only the standard library
and pyarrow, so analysis keeps working on a laptop without the training stack.
"""
