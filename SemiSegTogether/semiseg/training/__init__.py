"""The parts of the training loop (semiseg.train), one responsibility a module.

config: the settings and the result; data: the prepared cases and the patch; optimisation: optimiser,
schedule and gradient scaler; distribution: the DDP wrapping under torchrun; validation: sliding-window Dice
on held-out cases and the best checkpoint; checkpoints: the last checkpoint and --resume; package: the model
card and the exported model.
"""
