"""Datasets and Lightning datamodules: MNIST, Fashion-MNIST and synthetic tensors."""
