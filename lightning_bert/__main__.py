"""`python -m lightning_bert <command> [args]`: the same dispatcher as the `lightning-bert` console script."""
import sys

from lightning_bert.cli import main

sys.exit(main())
