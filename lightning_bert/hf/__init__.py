"""Hugging Face interop, one job per module:

- adapter.py: HFAdapter, the interface an architecture implements (config mapping + weight maps, both ways);
- bert.py (BERT, ALBERT, RoBERTa-PreLayerNorm), deberta.py (DeBERTa-v2), xlnet.py: one adapter each;
- registry.py: the adapters, looked up by our attention kind (export) or config.json's model_type (import);
- export.py: checkpoint -> transformers directory (+ sentence-transformers);
- load.py: transformers directory -> our encoder fields, weights and tokenizer (model.init_from).
transformers is imported lazily, never on the core training path.
"""
