"""Evaluation of pretrained encoders: NSP/SOP probes, GLUE fine-tuning, sentence embeddings, Sentence-BERT."""
