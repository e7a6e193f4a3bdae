"""Import a Hugging Face BERT / RoBERTa / ALBERT / DistilBERT / ModernBERT / ELECTRA directory: an encoder as a bert_jax
params-only export, a fine-tuned task model as a bert_jax fine-tuned model directory.

python -m bert_jax.import_hf --input=HF_DIR --output=DIR
An encoder (BertModel, *ForPreTraining, *ForMaskedLM, ...) is what fine-tuning, continued pretraining and
distillation (--config.train.init_checkpoint) start from; a DistilBertForMaskedLM becomes objective 'mlm' with
type_vocab_size 0 (no segment table), a ModernBertForMaskedLM (or ModernBertModel) objective 'mlm' with
ModernBERT's block (pre-norm, GeGLU, rotary, local-global attention; its BPE tokenizer.json is read too).
Heads the checkpoint lacks (a bare encoder has no MLM or NSP head) are initialised fresh and listed, and so
are unused HF tensors. A *ForSequenceClassification, *ForTokenClassification,
*ForQuestionAnswering or *ForMultipleChoice model becomes a model directory that `predict` and
`export --format=hf` read, with the task kind from the class (and problem_type) and the label names
from id2label.

python -m bert_jax.import_hf --input=ELECTRA_DISCRIMINATOR_DIR [--generator=GENERATOR_DIR] --output=DIR
An ELECTRA ElectraForPreTraining (or ElectraModel) directory becomes an objective='electra' export whose
discriminator is the checkpoint's; the ElectraForMaskedLM generator is read from --generator, else from a
generator/ directory beside --input (export --format=hf writes that layout), else initialised fresh.
Fine-tuning takes the discriminator; ELECTRA task models (ElectraForSequenceClassification, ...) are refused.

python -m bert_jax.import_hf --input=SENTENCE_TRANSFORMERS_DIR --output=DIR
A sentence-transformers directory (it has modules.json) becomes a sentence_embedding model directory whose
pooling, normalisation and max_seq_length are the directory's; modules bert_jax cannot compute (Dense,
weighted-mean pooling, ...) are refused.
"""

from absl import flags

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.finetuning import hf_export, st_export
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import sentence_transformers as st_files

_INPUT = flags.DEFINE_string("input", None, "HF model directory (config.json, model.safetensors or "
                             "pytorch_model.bin, vocab.txt).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the params-only export or model directory to.")
_GENERATOR = flags.DEFINE_string("generator", None, "ELECTRA only: the ElectraForMaskedLM generator directory "
                                 "(default: generator/ beside --input if there is one, else a fresh generator).")
flags.mark_flags_as_required(["input", "output"])
cli.refuse_empty("input", "output")


def _import():
    if st_files.is_directory(_INPUT.value):
        if _GENERATOR.value:
            raise InputError(f"--generator is for ELECTRA; {_INPUT.value} is a sentence-transformers directory.")
        return st_export.import_sentence_transformers(_INPUT.value, _OUTPUT.value)
    if hf_export.is_hf_task_directory(_INPUT.value):
        return hf_export.import_hf_finetuned(_INPUT.value, _OUTPUT.value)
    return hf_convert.import_hf_directory(_INPUT.value, _OUTPUT.value, generator=_GENERATOR.value)


def main(argv):
    print(cli.run(argv, _import))


if __name__ == "__main__":
    cli.run_app(main)
