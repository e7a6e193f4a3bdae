"""What every run needs whatever it trains: mesh and shardings, multi-host, preemption, the non-finite
guard, metrics reporting, all checkpoint I/O and the workdir lock. Imports neither pretraining nor fine-tuning."""
