"""Learners: pure JAX/Equinox functions over pytrees (no TensorFlow/Reverb imports)."""
