"""tune_jobs: experiment specs, the trial function and the Ray Tune sweep of lora-sweep."""
