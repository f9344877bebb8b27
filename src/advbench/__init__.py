"""advbench: adversarial medical-imaging benchmark datasets."""

__version__ = "0.1.0"
