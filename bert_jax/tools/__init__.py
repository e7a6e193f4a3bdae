"""Measuring tools the commands use: the benchmark, model statistics and plots."""
