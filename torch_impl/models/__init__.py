"""PyTorch model builders, one file per family; the same files exist in ``paddle_impl/models``."""
