"""The encoder and the kinds it is built from. Importing the package imports every module that holds a
kind, so each registry (ATTENTIONS, POSITIONS, NORMS, FEED_FORWARDS) is complete wherever it is read."""
from lightning_bert.model import attention, disentangled, layers, positions, relative  # noqa: F401
