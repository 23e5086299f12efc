"""tune_jobs: from a spec to trained trials. Rooms, each importing only those listed after it:
commands (this folder's files: cli, plan, calibrate, run, trial, export) -> sweep/ -> train/ -> data/ -> study/
-> remote/. docs/development.md draws the house."""
