"""resgan: a ResNet-GAN image generator in a reproducible, experiment-tracked pipeline."""

__version__ = "0.1.0"
