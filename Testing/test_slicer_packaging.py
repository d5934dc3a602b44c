"""Packaging of the two Slicer modules, checked without Slicer: the .ui files (parsed, every
widget the code names is there, loadable by Qt's QUiLoader, rendered to docs/images), the
CMake lists (every Python file and resource, nothing missing), the module files' shape, and
that the *Lib packages stay Slicer-free."""

import ast
import os
import py_compile
import re
import struct

import pytest

import helpers_slicer as h

h.addModulePaths()

import update_cmake_lists  # noqa: E402

MODULES = ("SemiSegTogether", "SemiSegTrainer")
QT_PREFIXES = ("Q",)


def modulePy(module):
    return os.path.join(h.ROOT, module, f"{module}.py")


# --- .ui ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_a_designer_file_with_a_qmrmlwidget_root_and_scene_connections(module):
    import xml.etree.ElementTree as ET

    tree = ET.parse(h.uiPath(module))
    root = tree.getroot()
    assert root.tag == "ui" and root.get("version") == "4.0" and root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    widgets = h.uiWidgets(h.uiPath(module))
    custom = h.uiCustomWidgets(h.uiPath(module))
    for name, cls in widgets.items():
        assert cls.startswith(QT_PREFIXES) and cls[1:2].isupper() or cls in custom, f"{name}: {cls} not declared"
    selectors = [n for n, c in widgets.items() if c in ("qMRMLNodeComboBox", "qMRMLPlotWidget")]
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert set(selectors) <= connected


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_names_exists_in_the_ui(module):
    used = h.uiNamesUsedInCode(modulePy(module))
    widgets = h.uiWidgets(h.uiPath(module))
    assert used, "the module names no widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"{module}.py uses self.ui.{missing} which {module}.ui does not have"


def _parameterNodeFields(module):
    tree = ast.parse(open(modulePy(module), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{module}ParameterNode":
            decorators = [d.id if isinstance(d, ast.Name) else "" for d in node.decorator_list]
            assert "parameterNodeWrapper" in decorators
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"no {module}ParameterNode class")


@pytest.mark.parametrize("module", MODULES)
def test_bound_widgets_name_real_parameters(module):
    fields = _parameterNodeFields(module)
    bound = h.uiParameterNames(h.uiPath(module))
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName without a parameter: {unknown}"


@pytest.mark.parametrize("module", MODULES)
def test_qt_uiloader_builds_every_widget_with_base_class_fallback(module):
    import PySide6.QtUiTools  # noqa: F401
    from PySide6.QtWidgets import QWidget

    text = open(h.uiPath(module), encoding="utf-8").read()
    widget, error = h.loadUi(text)
    if widget is None:  # this Qt's loader cannot fall back by itself: rewrite to the declared bases
        widget, error = h.loadUi(h.rewriteUi(text))
    assert widget is not None, error
    custom = h.uiCustomWidgets(h.uiPath(module))
    for name, cls in h.uiWidgets(h.uiPath(module)).items():
        child = widget if name == module else widget.findChild(QWidget, name)
        assert child is not None, f"{name} was not built"
        expected = h.qtBaseClass(cls, custom)
        assert child.inherits(expected), f"{name}: {child.metaObject().className()} is not a {expected}"


def _pngSize(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _panelPath(tmp_path, name):
    """Renders go to a temporary folder; with SEMISEG_UPDATE_DOCS_IMAGES=1 they replace docs/images/,
    so a test run never changes tracked files by itself."""
    if os.environ.get("SEMISEG_UPDATE_DOCS_IMAGES") == "1":
        return os.path.join(h.ROOT, "docs", "images", name)
    return str(tmp_path / name)


def _cardManifest():
    """The card shown in the rendered panel: a real model package's (SEMISEG_DOC_MODEL=path, used when
    docs/images are updated), else the example of docs/contracts.md."""
    path = os.environ.get("SEMISEG_DOC_MODEL")
    if path:
        from semiseg.model import read_manifest
        return read_manifest(path)
    return h.exampleManifest()


def test_render_together_panel_png(tmp_path):
    import PySide6.QtUiTools  # noqa: F401
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QListWidget, QListWidgetItem

    from SemiSegTogetherLib.manifest import ModelCard

    widget, error = h.loadUi(h.rewriteUi(open(h.uiPath("SemiSegTogether"), encoding="utf-8").read(), preview=True))
    assert widget is not None, error
    manifest = _cardManifest()
    widget.findChild(QComboBox, "modelComboBox").addItem(manifest["name"])
    widget.findChild(QLabel, "modelCardLabel").setText(ModelCard.fromManifest(manifest).html())
    prompts = widget.findChild(QListWidget, "promptsListWidget")
    for label in manifest["labels"]:
        item = QListWidgetItem(label["name"])
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        prompts.addItem(item)
    widget.findChild(QLineEdit, "modelsFolderPathLineEdit").setText("~/.semiseg/models")
    path = _panelPath(tmp_path, "SemiSegTogether-panel.png")
    size = h.renderWidget(widget, path)
    assert _pngSize(path) == size and size[0] >= 400 and size[1] >= 600


def test_render_together_first_open_png(tmp_path):
    """The panel with an empty models folder, its words taken from the module itself (under Slicer 5.12.3's
    own slicer package, see test_slicer_in_release.py)."""
    import slicer_standins as standins
    from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit

    reason = standins.missingReleaseReason(standins.RELEASES[-1])
    if reason:
        pytest.skip(reason)
    release = standins.loadRelease(standins.RELEASES[-1])
    try:
        standins.QSettings.store["SemiSeg/modelsDir"] = os.path.join("~", ".semiseg", "models")
        module = standins.openModule(release, "SemiSegTogether", pythonExecutable="python")
        card, choice = module.ui.modelCardLabel.text, module.ui.modelComboBox.currentText
    finally:
        release.close()
    assert "No model yet" in card
    widget, error = h.loadUi(h.rewriteUi(open(h.uiPath("SemiSegTogether"), encoding="utf-8").read(), preview=True))
    assert widget is not None, error
    widget.findChild(QComboBox, "modelComboBox").addItem(choice)
    widget.findChild(QLabel, "modelCardLabel").setText(card.replace(os.path.expanduser("~"), "~"))
    widget.findChild(QLineEdit, "modelsFolderPathLineEdit").setText("~/.semiseg/models")
    path = _panelPath(tmp_path, "SemiSegTogether-first-open.png")
    size = h.renderWidget(widget, path)
    assert _pngSize(path) == size


def test_render_trainer_panel_png(tmp_path):
    import PySide6.QtUiTools  # noqa: F401
    from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QTableWidget, QTableWidgetItem

    from SemiSegTrainerLib.settings import readMethods

    widget, error = h.loadUi(h.rewriteUi(open(h.uiPath("SemiSegTrainer"), encoding="utf-8").read(), preview=True))
    assert widget is not None, error
    methods = widget.findChild(QComboBox, "methodComboBox")
    ordered = readMethods(os.path.join(h.TRAINER_DIR, "Resources", "methods.json"))
    for m in ordered:
        methods.addItem(m.label())
    widget.findChild(QLabel, "methodDescriptionLabel").setText(ordered[0].plainDescription())
    widget.findChild(QTableWidget, "labeledCasesTable").setHorizontalHeaderLabels(["Volume", "Segmentation"])
    options = widget.findChild(QTableWidget, "methodOptionsTable")
    options.setRowCount(0)
    widget.findChild(QLineEdit, "workFolderPathLineEdit").setText("~/.semiseg/training")
    assert isinstance(widget.findChild(QTableWidget, "labeledCasesTable").item(0, 0), (type(None), QTableWidgetItem))
    path = _panelPath(tmp_path, "SemiSegTrainer-panel.png")
    size = h.renderWidget(widget, path)
    assert _pngSize(path) == size and size[1] >= 600


# --- CMake -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_name_every_module_file_and_nothing_missing(module):
    moduleDir = os.path.join(h.ROOT, module)
    text = open(os.path.join(moduleDir, "CMakeLists.txt"), encoding="utf-8").read()
    scripts, resources = update_cmake_lists.expectedFiles(moduleDir)
    listedScripts = update_cmake_lists.parseListBlock(text, "MODULE_PYTHON_SCRIPTS", module)
    listedResources = update_cmake_lists.parseListBlock(text, "MODULE_PYTHON_RESOURCES", module)
    hint = " (run: python Testing/update_cmake_lists.py)"
    assert sorted(set(scripts) - set(listedScripts)) == [], "Python files not in MODULE_PYTHON_SCRIPTS" + hint
    assert sorted(set(listedScripts) - set(scripts)) == [], "listed scripts that do not exist" + hint
    assert sorted(set(resources) - set(listedResources)) == [], "files not in MODULE_PYTHON_RESOURCES" + hint
    assert sorted(set(listedResources) - set(resources)) == [], "listed resources that do not exist" + hint
    assert f"{module}.py" in listedScripts
    assert {f"Resources/UI/{module}.ui", f"Resources/Icons/{module}.png"} <= set(listedResources)
    if module == "SemiSegTogether":
        assert "semiseg/__init__.py" in listedScripts and "semiseg/__main__.py" in listedScripts
        assert "Resources/requirements.txt" in listedResources
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert os.path.isfile(os.path.join(moduleDir, "Testing", "Python", "CMakeLists.txt"))


def test_expected_files_rule_sees_new_engine_files(tmp_path):
    """The rule is computed from the file system: a file someone adds later is caught."""
    (tmp_path / "M.py").write_text("", encoding="utf-8")
    (tmp_path / "semiseg" / "nets").mkdir(parents=True)
    (tmp_path / "semiseg" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "semiseg" / "nets" / "new_net.py").write_text("", encoding="utf-8")
    (tmp_path / "semiseg" / "presets.json").write_text("{}", encoding="utf-8")
    (tmp_path / "semiseg" / "__pycache__").mkdir()
    (tmp_path / "semiseg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    (tmp_path / "Testing" / "Python").mkdir(parents=True)
    (tmp_path / "Testing" / "Python" / "t.py").write_text("", encoding="utf-8")
    (tmp_path / "Resources" / "Icons").mkdir(parents=True)
    (tmp_path / "Resources" / "Icons" / "M.png").write_bytes(b"")
    scripts, resources = update_cmake_lists.expectedFiles(str(tmp_path))
    assert scripts == ["M.py", "semiseg/__init__.py", "semiseg/nets/new_net.py"]
    assert resources == ["Resources/Icons/M.png", "semiseg/presets.json"]


def test_top_level_cmake_has_extension_metadata_and_both_modules():
    text = open(os.path.join(h.ROOT, "CMakeLists.txt"), encoding="utf-8").read()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key} ", text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text and 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(SemiSegTogether)" in text and "add_subdirectory(SemiSegTrainer)" in text
    assert "include(${Slicer_EXTENSION_CPACK})" in text
    for url in re.findall(r"\$\{SEMISEG_RAW_URL\}/(\S+?)[\s\"]", text):  # icon and screenshots exist in the repo
        assert os.path.isfile(os.path.join(h.ROOT, url)), url


@pytest.mark.parametrize("path", ["Resources/Icons/SemiSeg.png", "SemiSegTogether/Resources/Icons/SemiSegTogether.png",
                                  "SemiSegTrainer/Resources/Icons/SemiSegTrainer.png"])
def test_icons_are_128px_pngs(path):
    assert _pngSize(os.path.join(h.ROOT, path)) == (128, 128)


# --- module code ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_module_file_compiles_and_has_the_five_classes(module, tmp_path):
    py_compile.compile(modulePy(module), cfile=str(tmp_path / "m.pyc"), doraise=True)
    tree = ast.parse(open(modulePy(module), encoding="utf-8").read())
    classes = {n.name: [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in n.bases]
               for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes[module] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes[f"{module}Widget"]
    assert classes[f"{module}Logic"] == ["ScriptedLoadableModuleLogic"]
    assert classes[f"{module}Test"] == ["ScriptedLoadableModuleTest"]
    assert f"{module}ParameterNode" in classes
    source = open(modulePy(module), encoding="utf-8").read()
    assert "from slicer.i18n import tr as _" in source
    assert "tryWithErrorDisplay" in source


def test_trainer_depends_on_together_and_imports_the_engine_lazily():
    source = open(modulePy("SemiSegTrainer"), encoding="utf-8").read()
    assert 'self.parent.dependencies = ["SemiSegTogether"]' in source
    tree = ast.parse(source)
    for node in tree.body:  # module level: no `import semiseg` / `from semiseg...`
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "semiseg" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "semiseg"


LIB_FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "MRMLCorePython", "PythonQt", "psutil"}


@pytest.mark.parametrize("lib", ["SemiSegTogether/SemiSegTogetherLib", "SemiSegTrainer/SemiSegTrainerLib"])
def test_lib_packages_are_slicer_free_at_import(lib):
    """No slicer/qt/ctk/vtk anywhere; psutil only lazily (inside functions)."""
    folder = os.path.join(h.ROOT, lib)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            for imported in names:
                assert imported not in LIB_FORBIDDEN - {"psutil"}, f"{lib}/{name} imports {imported}"
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(t.split(".")[0] == "psutil" for t in top), f"{lib}/{name}: psutil at import"
