"""Fine-tuning BERT on downstream tasks (GLUE, SQuAD, CoNLL NER, SWAG) and on your own files: tasks, file readers,
features, steps, metrics, the runner, the fine-tuned model directory, prediction, and embeddings."""
