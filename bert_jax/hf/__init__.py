"""Hugging Face transformers interop: parameter names, directories on disk, conversion both ways."""
