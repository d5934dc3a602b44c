"""SemiSeg engine: semi-supervised 3D medical image segmentation.

Pure Python (torch, MONAI, SimpleITK, numpy); never imports slicer, qt or ctk,
so the same code runs in the Slicer modules, from the `semiseg` CLI and in tests.
"""

__version__ = "0.1.0"
