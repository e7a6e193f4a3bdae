"""Fine-tuning BERT on downstream tasks: GLUE, SQuAD, CoNLL NER, multiple choice."""
