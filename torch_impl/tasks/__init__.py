"""PyTorch tasks (twins of ``paddle_impl/tasks``); the framework-free halves are in ``common/tasks``."""
