"""The study as typed values: the YAML spec and its checks and profiles, its sections (data, select, repeats), the
GLUE task presets, and the grid of trials it expands into. Imports only the remote room below it."""
