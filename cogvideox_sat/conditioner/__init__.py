"""Conditioners: GeneralConditioner and the frozen T5 text embedder."""
