"""Image-fidelity and attack-rate metrics for adversarial benchmark samples."""
