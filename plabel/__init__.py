"""plabel: semi-supervised learning with entropy-selected pseudo-labels, on Accelerate."""

__version__ = "0.3.1"
