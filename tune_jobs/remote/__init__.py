"""Inputs at a URI (s3://, gs://, ...): folders listed and fetched into the node's cache, a model staged per node.
The ground floor of tune_jobs: the study reads a model's config.json through it, data reads its files."""
