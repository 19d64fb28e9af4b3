"""Paddle tasks (twins of ``torch_impl/tasks``); the framework-free halves are in ``common/tasks``."""
