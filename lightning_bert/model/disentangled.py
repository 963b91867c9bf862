"""DeBERTa's disentangled attention and relative position scheme (registered into model/attention.py
and model/positions.py). Being built: see issue 9."""
