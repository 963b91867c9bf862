"""Transformer-XL / XLNet relative attention and position scheme (registered into model/attention.py
and model/positions.py). Being built: see issue 10."""
