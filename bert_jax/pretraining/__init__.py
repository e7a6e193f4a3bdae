"""Pretraining: masking, losses, the optimizer, the one setup and the jitted steps, the loop, held-out
evaluation, and a run's checkpoints as models."""
