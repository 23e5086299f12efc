"""Installed package versions, read one way by every command: the training node's provenance, the analysing
machine's versions in the Parquet metadata, `lora-sweep --version` and the export's model card."""

from __future__ import annotations

from importlib import metadata


def package_version(dist: str) -> str | None:
    """The installed version of distribution `dist`; None where it is not installed (a checkout run from source)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
