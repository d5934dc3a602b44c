"""Slicer-free logic of the SemiSegTrainer module.

Exports scene cases (numpy arrays + geometry) to files the engine reads, builds and
validates training settings, turns `semiseg train` events into progress and curves,
keeps the bookkeeping that Cancel/Resume needs and registers the finished model.
Nothing here imports slicer, qt, ctk or vtk; SemiSegTogetherLib must be importable
(in Slicer both modules live in one folder; in pytest both are put on sys.path).
"""

from SemiSegTrainerLib.export import (  # noqa: F401
    ExportedDataset,
    Geometry,
    LabeledCase,
    SegmentInfo,
    checkCases,
    countPoolImages,
    exportDataset,
    geometryFromIjkToRas,
    ijkToRasToLps,
)
from SemiSegTrainerLib.jobs import TrainingJobFolder, TrainingRunner, findResumableJobs, registerModel  # noqa: F401
from SemiSegTrainerLib.progress import TrainingProgress, formatDuration  # noqa: F401
from SemiSegTrainerLib.settings import (  # noqa: F401
    RECOMMENDED_METHOD,
    MethodInfo,
    TrainingSettings,
    buildTrainCommand,
    parseMethodsJson,
    readMethods,
)
