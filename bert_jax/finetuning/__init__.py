"""Fine-tuning BERT on downstream tasks (GLUE, SQuAD, CoNLL NER, SWAG): tasks, file readers, features,
steps, metrics, the runner, and embeddings."""
