"""Names, colours and standard terminology for structures, so segments look right in Slicer.

Codes are (scheme, value, meaning) triplets as Slicer's terminology uses them (SNOMED CT, 'SCT').
Unknown names get a distinct colour from a fixed palette and no terminology.
"""

from __future__ import annotations

ANATOMY = ("SCT", "123037004", "Anatomical Structure")
MORPHOLOGY = ("SCT", "49755003", "Morphologically Altered Structure")

# name (lower case) → (colour 0–255, category, type)
KNOWN: dict[str, tuple[tuple[int, int, int], tuple[str, str, str], tuple[str, str, str]]] = {
    "left atrium": ((177, 122, 101), ANATOMY, ("SCT", "82471001", "Left atrium")),
    "pancreas": ((249, 180, 111), ANATOMY, ("SCT", "15776009", "Pancreas")),
    "liver": ((221, 130, 101), ANATOMY, ("SCT", "10200004", "Liver")),
    "spleen": ((157, 108, 162), ANATOMY, ("SCT", "78961009", "Spleen")),
    "kidney": ((185, 102, 83), ANATOMY, ("SCT", "64033007", "Kidney")),
    "heart": ((206, 110, 84), ANATOMY, ("SCT", "80891009", "Heart")),
    "tumor": ((144, 238, 144), MORPHOLOGY, ("SCT", "108369006", "Neoplasm")),
    "tumour": ((144, 238, 144), MORPHOLOGY, ("SCT", "108369006", "Neoplasm")),
    "lesion": ((144, 238, 144), MORPHOLOGY, ("SCT", "52988006", "Lesion")),
}

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def label_entry(name: str, value: int, index: int, info: dict | None = None, task: str | None = None) -> dict:
    """One manifest label: name, value, colour, terminology (from `info` when the user gave them)."""
    info = info or {}
    known = KNOWN.get(name.strip().lower())
    color = info.get("color") or (known[0] if known else PALETTE[index % len(PALETTE)])
    terminology = info.get("terminology")
    if terminology is None and known:
        terminology = {"category": list(known[1]), "type": list(known[2])}
    return {"name": name, "value": int(value), "color": [int(c) for c in color], "terminology": terminology,
            "task": task}
