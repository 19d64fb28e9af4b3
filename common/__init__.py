"""Framework-free core: specs, configs, data, numpy reference math, checkpoints.

Nothing under ``common/`` may import torch, paddle or tensorflow (a test enforces it).
"""
