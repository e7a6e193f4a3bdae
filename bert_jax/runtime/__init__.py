"""What every run needs whatever it trains: mesh and shardings, multi-host, preemption, the non-finite
guard, metrics reporting and all checkpoint I/O. Imports neither pretraining nor fine-tuning."""
