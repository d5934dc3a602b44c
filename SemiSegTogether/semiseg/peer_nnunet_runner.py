"""nnU-Net v2's own train and predict commands, with one more trainer: one epoch of N iterations.

nnU-Net's fixed-length trainers jump from 1 epoch (250 iterations) to 5, so a wall-time budget between
them cannot be matched. nnU-Net finds a trainer by its class name inside its own package; this module
defines `nnUNetTrainer_<N>iters` (nnU-Net's default trainer with `num_epochs = 1` and
`num_iterations_per_epoch = N`, like its own `nnUNetTrainer_1epoch`, nothing else changed), lets that
lookup find it, and hands the rest of the command line to nnU-Net's own entry point.

    python -m semiseg.peer_nnunet_runner ITERATIONS train|predict NNUNET-ARGUMENTS...
"""

from __future__ import annotations

import sys


def trainer_name(iterations: int) -> str:
    return f"nnUNetTrainer_{iterations}iters"


def register(iterations: int):
    """Define the trainer and make nnU-Net's training and prediction find it by name; returns the class."""
    import nnunetv2.inference.predict_from_raw_data as predict
    import nnunetv2.run.run_training as run_training
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class Trainer(nnUNetTrainer):
        # nnU-Net records its trainers' __init__ arguments by name: the signature must stay its own.
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_iterations_per_epoch = iterations

    Trainer.__name__ = Trainer.__qualname__ = trainer_name(iterations)
    find = run_training.recursive_find_python_class

    def lookup(folder, name, current_module):
        return Trainer if name == Trainer.__name__ else find(folder, name, current_module)

    run_training.recursive_find_python_class = lookup
    predict.recursive_find_python_class = lookup
    return Trainer


def main(argv: list[str]) -> None:
    iterations, command, rest = int(argv[0]), argv[1], argv[2:]
    register(iterations)
    if command == "train":
        from nnunetv2.run.run_training import run_training_entry as entry
    elif command == "predict":
        from nnunetv2.inference.predict_from_raw_data import predict_entry_point as entry
    else:
        raise SystemExit(f"unknown command {command!r}: train or predict")
    sys.argv = [f"nnUNetv2_{command}", *rest]
    entry()


if __name__ == "__main__":
    main(sys.argv[1:])
