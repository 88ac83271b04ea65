"""Reading and writing models, checkpoints and tokenizers."""
