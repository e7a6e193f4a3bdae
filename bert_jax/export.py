"""Export a pretraining checkpoint (params-only for fine-tuning, or a Hugging Face directory), or a fine-tuned
model (a Hugging Face directory that AutoModelFor<its task> loads).

python -m bert_jax.export --workdir=RUN [--step=N] --output=DIR --format=params|hf
python -m bert_jax.export --workdir=FINETUNED_MODEL_DIR_OR_WORKDIR --output=DIR --format=hf
python -m bert_jax.export --workdir=SENTENCE_MODEL_DIR_OR_WORKDIR --output=DIR --format=sentence_transformers
(a sentence_embedding fine-tune as a directory that sentence-transformers' SentenceTransformer(DIR) loads)
"""

from absl import flags

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.finetuning import hf_export, model_dir, st_export
from bert_jax.hf import convert as hf_convert
from bert_jax.pretraining import run_checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining run directory (holds checkpoints/), or a fine-tuned "
                               "model directory (or the fine-tuning workdir that holds it under model/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest; pretraining runs only).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write (must not hold an export already).")
_FORMAT = flags.DEFINE_enum("format", "params", ["params", "hf", "sentence_transformers"],
                            "params: params-only Orbax checkpoint + config + tokenizer; hf: transformers directory; "
                            "sentence_transformers: a sentence_embedding fine-tune for SentenceTransformer(DIR).")
flags.mark_flags_as_required(["workdir", "output"])
cli.refuse_empty("workdir", "output")


def _export():
    finetuned = model_dir.resolve(_WORKDIR.value)
    if model_dir.is_model_dir(finetuned):
        if _FORMAT.value == "sentence_transformers":
            _refuse_step()
            return st_export.export_sentence_transformers(finetuned, _OUTPUT.value)
        if _FORMAT.value != "hf":
            raise InputError(f"{finetuned} is a fine-tuned model directory, which is already a params-only export "
                             "(predict and further fine-tunes read it as it is); use --format=hf for transformers.")
        _refuse_step()
        return hf_export.export_finetuned_hf(finetuned, _OUTPUT.value)
    if _FORMAT.value == "sentence_transformers":
        raise InputError(f"{_WORKDIR.value} is not a fine-tuned model; --format=sentence_transformers exports a "
                         "sentence_embedding fine-tune (its workdir or model directory): fine-tune one first.")
    export = hf_convert.export_hf if _FORMAT.value == "hf" else run_checkpoint.export_params
    return export(_WORKDIR.value, _OUTPUT.value, step=_STEP.value)


def _refuse_step():
    if _STEP.value is not None:
        raise InputError(f"--step={_STEP.value} applies to pretraining runs; a fine-tuned model directory holds "
                         "one set of parameters (the checkpoint chosen on dev). Leave --step out.")


def main(argv):
    print(cli.run(argv, _export))


if __name__ == "__main__":
    cli.run_app(main)
