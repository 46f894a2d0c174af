"""Structured pruning of ONNX graphs (SPA): channel groups, importance, OBSPA, apply."""
