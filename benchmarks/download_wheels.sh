#!/usr/bin/env bash
# Downloads into wheels/ (git-ignored) the cp312 Linux wheels that `python -m bert_jax.benchmark` needs and the
# device machine's image lacks (Python 3.12 with jax, flax, optax, orbax, sentencepiece, absl-py, torch,
# transformers, etils, cloudpickle, protobuf, psutil, PyYAML; no registry there). Run it where pip reaches a
# registry; benchmarks/gpu_check.sh installs them there with --no-index --no-deps.
#
#   benchmarks/download_wheels.sh [DIR]        # default DIR: wheels
#
# The benchmark's imports need only these four: ml_collections (configs, flags), grain (the packing and
# pipeline modules subclass its datasets), array_record and portpicker (grain imports both). The corpus
# readers (tensorflow_datasets, array_record files) and tensorboardX are imported lazily, only by
# --input_pipeline and training, so their many dependencies are not shipped. --no-deps: each dependency is
# named here, so the folder holds one version of each and nothing the image already has.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-wheels}"
mkdir -p "$dir"
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$dir" ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
ls -l "$dir"
