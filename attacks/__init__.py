"""Attacks over callables and tensors, metrics, and the evaluation protocols of the papers. No Ray, no training loops."""
