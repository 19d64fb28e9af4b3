"""Paddle model builders, one file per family; the same files exist in ``torch_impl/models``."""
