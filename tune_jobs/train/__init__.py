"""One trial, without Ray except its adapter: model loading, device and precision, preparation, the epoch loop,
meters, task metrics, checkpoints, predictions, provenance. Imports data, study and remote."""
