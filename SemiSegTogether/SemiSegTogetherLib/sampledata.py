"""SemiSeg's entry in Slicer's Sample Data module: a small synthetic phantom scan and its segmentation.

The files ship with the module (Resources/SampleData, made by `semiseg.synthetic.make_phantom`), so a
first-time user can try Segment (once a model exists) and the Trainer (a segmented case) without any
download; Sample Data copies them from their file:// address into its cache and loads them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request

CATEGORY = "SemiSeg"
SAMPLE_NAME = "SemiSegPhantom"
# (file name, node name, Slicer file type)
FILES = (("SemiSegPhantom.nrrd", "SemiSegPhantom", "VolumeFile"),
         ("SemiSegPhantom.seg.nrrd", "SemiSegPhantom segmentation", "SegmentationFile"))


def fileUri(path: str) -> str:
    """A file:// address, as Sample Data's own tests make them for local files."""
    return urllib.parse.urljoin("file:", urllib.request.pathname2url(os.path.abspath(path)))


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sampleDataSource(resourcesDir: str) -> dict:
    """Keyword arguments for SampleData.SampleDataLogic.registerCustomSampleDataSource."""
    paths = [os.path.join(resourcesDir, "SampleData", name) for name, _node, _type in FILES]
    return dict(category=CATEGORY, sampleName=SAMPLE_NAME,
                thumbnailFileName=os.path.join(resourcesDir, "Icons", f"{SAMPLE_NAME}.png"),
                uris=[fileUri(p) for p in paths], fileNames=[name for name, _n, _t in FILES],
                nodeNames=[node for _f, node, _t in FILES], loadFileType=[t for _f, _n, t in FILES],
                checksums=[f"SHA256:{sha256(p)}" for p in paths])
