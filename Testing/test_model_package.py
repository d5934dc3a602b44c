"""Model package NAME.semiseg/: round trip, manifest, overwrite protection, and every way a package can be bad."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from semiseg import __version__
from semiseg.errors import ModelError
from semiseg.labels import label_entry
from semiseg.model import FORMAT, FORMAT_VERSION, load_model, read_manifest, save_model
from semiseg.nets import build_network


def tiny_net(n_classes: int = 3, n_filters: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    net = build_network("vnet", in_channels=1, n_classes=n_classes, n_filters=n_filters)
    # Non-trivial BatchNorm statistics, so the round trip has to carry buffers too.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def card(name: str = "tiny") -> dict:
    return {
        "name": name, "description": "test model", "modality": "MR",
        "labels": [label_entry("left atrium", 1, 0), label_entry("organ", 2, 1)],
        "tasks": [], "prompted": False,
        "preprocessing": {"spacing": None, "intensity": "zscore"},
        "patch_size": [16, 16, 16],
        "method": {"name": "supervised", "options": {}},
    }


@pytest.fixture
def package(tmp_path) -> Path:
    return save_model(tmp_path / "tiny.semiseg", tiny_net(), card())


def edit_manifest(package: Path, change) -> None:
    path = package / "model.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def load_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- round trip and manifest ---------------------------------------------------------------------------
def test_round_trip_gives_identical_outputs(tmp_path):
    net = tiny_net()
    path = save_model(tmp_path / "m.semiseg", net, card())
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "weights.safetensors"]
    loaded, manifest = load_model(path)
    assert not loaded.training
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    original, restored = net.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert manifest["labels"] == card()["labels"]
    # No temporary folders are left beside the package.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.semiseg"]


def test_manifest_fields(package):
    manifest = read_manifest(package)
    assert manifest["format"] == FORMAT == "semiseg-model"
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["engine_version"] == __version__
    assert manifest["architecture"] == {"name": "vnet", "args": {"in_channels": 1, "n_classes": 3, "n_filters": 4}}
    atrium, organ = manifest["labels"]
    assert atrium["name"] == "left atrium" and atrium["value"] == 1
    assert atrium["color"] == [177, 122, 101]
    assert atrium["terminology"] == {"category": ["SCT", "123037004", "Anatomical Structure"],
                                     "type": ["SCT", "82471001", "Left atrium"]}
    assert organ["value"] == 2 and "terminology" in organ and organ["terminology"] is None
    for lab in manifest["labels"]:
        assert len(lab["color"]) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in lab["color"])
    assert manifest["patch_size"] == [16, 16, 16]
    assert manifest["preprocessing"]["intensity"] == "zscore"


def test_trained_model_manifest(tiny_model):
    manifest = read_manifest(tiny_model)
    assert manifest["format"] == "semiseg-model" and manifest["format_version"] == 1
    assert manifest["engine_version"] == __version__
    assert manifest["architecture"]["name"] == "vnet"
    assert manifest["architecture"]["args"]["n_filters"] == 4
    assert [lab["name"] for lab in manifest["labels"]] == ["organ", "vessel", "lesion"]
    assert [lab["value"] for lab in manifest["labels"]] == [1, 2, 3]
    for lab in manifest["labels"]:
        assert len(lab["color"]) == 3 and all(0 <= c <= 255 for c in lab["color"])
        assert "terminology" in lab
    lesion = manifest["labels"][2]["terminology"]
    assert all(len(code) == 3 for code in lesion.values())
    assert manifest["patch_size"] == [32, 32, 32]
    assert manifest["method"]["name"] == "supervised"
    assert manifest["data"]["labeled"] == 3 and manifest["data"]["validation"] == 1
    net, _ = load_model(tiny_model)
    assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 4, 32, 32, 32)


# ---- overwriting ---------------------------------------------------------------------------------------
def test_refuses_to_overwrite_and_keeps_the_old_package(package):
    before = {p.name: p.read_bytes() for p in package.iterdir()}
    with pytest.raises(ModelError, match="already exists") as info:
        save_model(package, tiny_net(seed=5), card("other"))
    assert str(package) in str(info.value)
    assert {p.name: p.read_bytes() for p in package.iterdir()} == before
    _, manifest = load_model(package)
    assert manifest["name"] == "tiny"
    assert sorted(p.name for p in package.parent.iterdir()) == ["tiny.semiseg"]


def test_overwrite_replaces(package):
    new = tiny_net(seed=5)
    save_model(package, new, card("other"), overwrite=True)
    loaded, manifest = load_model(package)
    assert manifest["name"] == "other"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in new.state_dict().items())
    assert sorted(p.name for p in package.parent.iterdir()) == ["tiny.semiseg"]


def test_refuses_a_network_not_built_by_the_registry(tmp_path):
    with pytest.raises(ModelError, match="build_network"):
        save_model(tmp_path / "x.semiseg", torch.nn.Conv3d(1, 2, 1), card())
    assert not (tmp_path / "x.semiseg").exists()


# ---- bad packages --------------------------------------------------------------------------------------
def test_missing_folder(tmp_path):
    load_error(tmp_path / "nothing.semiseg", str(tmp_path / "nothing.semiseg"), "no such")


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "file.semiseg"
    path.write_text("{}", encoding="utf-8")
    load_error(path, str(path), "folder")


def test_missing_manifest(package):
    (package / "model.json").unlink()
    load_error(package, str(package / "model.json"), "missing")


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00garbage"], ids=["broken", "empty", "bad-utf8"])
def test_invalid_json(package, content):
    (package / "model.json").write_bytes(content)
    load_error(package, str(package / "model.json"), "JSON")


@pytest.mark.parametrize("change", [
    lambda m: m.pop("format"),
    lambda m: m.update(format="nnunet-model"),
], ids=["format-missing", "format-other"])
def test_foreign_json(package, change):
    edit_manifest(package, change)
    load_error(package, str(package / "model.json"), "not a SemiSeg model")


def test_json_that_is_not_an_object(package):
    (package / "model.json").write_text("[1, 2, 3]", encoding="utf-8")
    load_error(package, str(package / "model.json"))


def test_newer_format_version(package):
    edit_manifest(package, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    load_error(package, str(package / "model.json"), "newer")


def test_missing_required_field(package):
    edit_manifest(package, lambda m: m.pop("patch_size"))
    load_error(package, str(package / "model.json"), "patch_size")


def test_missing_weights(package):
    (package / "weights.safetensors").unlink()
    load_error(package, str(package), "weights.safetensors")


@pytest.mark.parametrize("garbage", [
    b"this is not a safetensors file at all" * 20,
    b"\x01\x02",
    struct.pack("<Q", 12) + b"{not json!!}" + b"\x00" * 16,
    b"",
], ids=["text", "short", "bad-header", "empty"])
def test_corrupt_safetensors(package, garbage):
    (package / "weights.safetensors").write_bytes(garbage)
    load_error(package, str(package / "weights.safetensors"), "corrupt")


def test_truncated_safetensors(package):
    path = package / "weights.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    load_error(package, str(path))


def test_weights_that_do_not_fit(package):
    edit_manifest(package, lambda m: m["architecture"]["args"].update(n_filters=8))
    load_error(package, str(package), "do not fit")


def test_unknown_architecture(package):
    edit_manifest(package, lambda m: m["architecture"].update(name="transformer-9000"))
    load_error(package, str(package), "transformer-9000")


def test_architecture_arguments_not_an_object(package):
    edit_manifest(package, lambda m: m["architecture"].update(args=[1, 3, 4]))
    load_error(package, str(package / "model.json"), "architecture")


def test_architecture_arguments_it_does_not_take(package):
    edit_manifest(package, lambda m: m["architecture"]["args"].update(heads=12))
    load_error(package, str(package), "heads")


# ---- legacy weights.pt: loaded without unpickling anything ---------------------------------------------
def test_plain_weights_pt_still_loads(package):
    net = tiny_net()
    (package / "weights.safetensors").unlink()
    torch.save(net.state_dict(), package / "weights.pt")
    loaded, _ = load_model(package)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


class _Payload:
    """Unpickling this creates (opens for writing) the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["pickle", "torch-save"])
def test_pickled_object_in_weights_pt_is_never_unpickled(package, tmp_path, how):
    marker = tmp_path / "pwned"
    (package / "weights.safetensors").unlink()
    payload = {"encoder.block_one.0.weight": _Payload(marker)}
    if how == "pickle":
        (package / "weights.pt").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, package / "weights.pt")
    # The payload works: plain unpickling would create the marker (checked on a copy, then removed).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe))).close()
    assert probe.exists()
    load_error(package, str(package / "weights.pt"), "refused")
    assert not marker.exists()


def test_weights_pt_holding_something_else_than_tensors(package):
    (package / "weights.safetensors").unlink()
    torch.save({"encoder.block_one.0.weight": [1, 2, 3]}, package / "weights.pt")
    load_error(package, str(package / "weights.pt"), "refused")
