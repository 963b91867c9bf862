"""Pretraining objectives: the interface, registry and selection in registry.py, one file per family.

Importing this package registers every family below; objectives run, sum and log in this order.
"""
from lightning_bert.objectives.registry import (OBJECTIVES, MicroBatch, Objective, ObjectiveOutput, build_objectives,
                                                check_batch, encoder_mask, objective_names, register)
from lightning_bert.objectives.mlm import MaskedLM
from lightning_bert.objectives.pair import NextSentencePrediction, SentenceOrderPrediction
from lightning_bert.objectives.sbo import SpanBoundary
from lightning_bert.objectives.plm import PermutationLM, TiedDecoder
from lightning_bert.objectives.rtd import GeneratorMLM, ReplacedTokenDetection

__all__ = ["OBJECTIVES", "MicroBatch", "Objective", "ObjectiveOutput", "build_objectives", "check_batch",
           "encoder_mask", "objective_names", "register", "MaskedLM", "NextSentencePrediction",
           "SentenceOrderPrediction", "SpanBoundary", "PermutationLM", "TiedDecoder",
           "GeneratorMLM", "ReplacedTokenDetection"]
