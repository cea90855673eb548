"""Pure PyTorch: networks, sampling, losses, datasets and checkpoints. No Ray, no HTTP."""
