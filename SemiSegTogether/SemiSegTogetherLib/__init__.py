"""Slicer-free logic of the SemiSegTogether module.

Nothing in this package imports slicer, qt, ctk or vtk: it builds command lines,
reads the engine's JSON events, reads model packages and checks memory, so that
all of it can be tested with plain pytest. SemiSegTogether.py does the MRML part.
"""

from SemiSegTogetherLib.catalog import (  # noqa: F401
    DEFAULT_MODELS_DIR,
    MODELS_DIR_ENV,
    ModelEntry,
    ModelExistsError,
    ModelPackageError,
    findModel,
    importModel,
    listModels,
    resolveModelsDir,
)
from SemiSegTogetherLib.command import buildPredictCommand, engineEnvironment  # noqa: F401
from SemiSegTogetherLib.events import EventTail, InferenceProgress, JobState  # noqa: F401
from SemiSegTogetherLib.manifest import ModelCard, SegmentSpec, readManifest, segmentSpecs, validateManifest  # noqa: F401
from SemiSegTogetherLib.memory import MemoryCheck, checkInferenceMemory, estimateInferenceMemoryMb  # noqa: F401
from SemiSegTogetherLib.process import BackgroundProcess, EngineJob, killProcessTree  # noqa: F401
