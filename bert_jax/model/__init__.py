"""The encoder and its heads: pure Flax NNX modules, no I/O; nothing above this folder is imported here."""
