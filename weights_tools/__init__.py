"""Importers and exporters between foreign checkpoints (TF, .pth, .pth.tar, .pdparams) and the neutral form.

TensorFlow is only ever imported inside functions (it must come after paddle/torchvision).
"""
