"""Stand-ins for MRML: observable nodes with StartModify/EndModify, the scripted module (parameter) node,
volumes, segmentations, plot and table nodes, and a scene with its close events."""

from __future__ import annotations

import itertools

MODIFIED_EVENT = 33  # vtkCommand::ModifiedEvent

# --- MRML ------------------------------------------------------------------------------------------


class vtkObservable:
    _tags = itertools.count(1)

    def __init__(self):
        self._observers = {}  # tag -> (event, callback, priority)
        self._disableModified = 0
        self._pendingModified = False

    def AddObserver(self, event, callback, priority=0.0):
        tag = next(vtkObservable._tags)
        self._observers[tag] = (event, callback, priority)
        return tag

    def RemoveObserver(self, tag):
        self._observers.pop(tag, None)

    def InvokeEvent(self, event, callData=None):
        for _tag, (ev, callback, _p) in sorted(self._observers.items(), key=lambda kv: -kv[1][2]):
            if ev == event and _tag in self._observers:
                callback(self, event) if callData is None else callback(self, event, callData)

    def Modified(self):
        if self._disableModified:
            self._pendingModified = True
        else:
            self.InvokeEvent(MODIFIED_EVENT)

    def StartModify(self):
        was = self._disableModified
        self._disableModified = 1
        return was

    def EndModify(self, wasModifying):
        self._disableModified = wasModifying
        if not wasModifying and self._pendingModified:
            self._pendingModified = False
            self.Modified()
        return 0

    def UnRegister(self, other):
        pass


class vtkMRMLNode(vtkObservable):
    def __init__(self):
        super().__init__()
        self._id, self._name, self._scene, self._attributes, self._refs = None, "", None, {}, {}
        self._singletonTag, self.saveWithScene, self.hideFromEditors = None, True, False

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name
        self.Modified()

    def GetClassName(self):
        return type(self).__name__

    def IsA(self, className):
        return any(c.__name__ == className for c in type(self).__mro__)

    def GetScene(self):
        return self._scene

    def SetAttribute(self, name, value):
        self._attributes[name] = value

    def GetAttribute(self, name):
        return self._attributes.get(name)

    def SetSingletonTag(self, tag):
        self._singletonTag = tag

    def GetSingletonTag(self):
        return self._singletonTag

    def SetSaveWithScene(self, value):
        self.saveWithScene = bool(value)

    def GetSaveWithScene(self):
        return self.saveWithScene

    def SetHideFromEditors(self, value):
        self.hideFromEditors = bool(value)

    def GetHideFromEditors(self):
        return self.hideFromEditors

    def SetNodeReferenceID(self, role, nodeId):
        self._refs[role] = [nodeId] if nodeId else []
        self.Modified()

    def SetAndObserveNodeReferenceID(self, role, nodeId):
        self.SetNodeReferenceID(role, nodeId)

    def GetNodeReferenceID(self, role):
        ids = self._refs.get(role) or []
        return ids[0] if ids else None

    def GetNodeReference(self, role):
        nodeId = self.GetNodeReferenceID(role)
        return self._scene.GetNodeByID(nodeId) if (nodeId and self._scene) else None

    def RemoveNodeReferenceIDs(self, role):
        if self._refs.pop(role, None):
            self.Modified()

    # transforms (a parent transform is a node reference, as in MRML)
    def SetAndObserveTransformNodeID(self, nodeId):
        self.SetNodeReferenceID("transform", nodeId)

    def GetTransformNodeID(self):
        return self.GetNodeReferenceID("transform")

    def GetParentTransformNode(self):
        return self.GetNodeReference("transform")

    def CreateDefaultDisplayNodes(self):
        pass


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._parameters = {}

    def SetParameter(self, name, value):
        if self._parameters.get(name) != value:
            self._parameters[name] = value
            self.Modified()

    def GetParameter(self, name):
        return self._parameters.get(name, "")

    def HasParameter(self, name):
        return name in self._parameters

    def UnsetParameter(self, name):
        if self._parameters.pop(name, None) is not None:
            self.Modified()

    def GetParameterNames(self):
        return list(self._parameters)


class vtkMRMLTransformNode(vtkMRMLNode):
    def IsTransformToWorldLinear(self):
        return True


class vtkMRMLVolumeNode(vtkMRMLNode):
    pass


class vtkMRMLScalarVolumeNode(vtkMRMLVolumeNode):
    pass


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    pass


class vtkSegment:
    def __init__(self, name="", color=(0.5, 0.5, 0.5)):
        self._name, self._color, self._tags = name, tuple(color), {}

    def GetName(self):
        return self._name

    def GetColor(self):
        return self._color

    def SetColor(self, r, g, b):
        self._color = (r, g, b)

    def SetTag(self, key, value):
        self._tags[key] = value

    def GetTag(self, key):
        return self._tags.get(key)

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"


class vtkSegmentation:
    def __init__(self):
        self._segments, self.masks, self._ids = {}, {}, itertools.count(1)

    def AddEmptySegment(self, segmentId="", name="", color=None):
        segmentId = segmentId or f"Segment_{next(self._ids)}"
        self._segments[segmentId] = vtkSegment(name or segmentId, color or (0.5, 0.5, 0.5))
        return segmentId

    def GetSegment(self, segmentId):
        return self._segments.get(segmentId)

    def GetSegmentIdBySegmentName(self, name):
        return next((i for i, seg in self._segments.items() if seg.GetName() == name), "")

    def RemoveSegment(self, segmentId):
        self._segments.pop(segmentId, None)
        self.masks.pop(segmentId, None)

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetNthSegmentID(self, index):
        return list(self._segments)[index]

    def GetNthSegment(self, index):
        return list(self._segments.values())[index]


class vtkMRMLSegmentationNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._segmentation = vtkSegmentation()

    def GetSegmentation(self):
        return self._segmentation

    def GetReferenceImageGeometryReferenceRole(self):
        return "referenceImageGeometryRef"

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.SetNodeReferenceID(self.GetReferenceImageGeometryReferenceRole(), volume.GetID())

    def CreateClosedSurfaceRepresentation(self):
        self.closedSurface = True


class vtkMRMLSubjectHierarchyNode(vtkMRMLNode):
    @staticmethod
    def GetSubjectHierarchyNode(scene):
        return vtkMRMLSubjectHierarchyNode()

    def GetItemByDataNode(self, node):
        return 0  # no folders in these tests


class vtkMRMLTableNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self.columns = []

    def AddColumn(self, array):
        self.columns.append(array)
        return array


class _RecordingNode(vtkMRMLNode):
    def __getattr__(self, name):  # SetXColumnName, SetColor...: recorded, no behaviour needed
        if name.startswith(("Set", "Add")):
            return lambda *args: self.__dict__.setdefault("settings", {}).__setitem__(name, args)
        raise AttributeError(name)


class vtkMRMLPlotSeriesNode(_RecordingNode):
    PlotTypeScatter, MarkerStyleNone, MarkerStyleCircle = 1, 0, 1


class vtkMRMLPlotChartNode(_RecordingNode):
    pass


class vtkMRMLPlotViewNode(_RecordingNode):
    pass


NODE_CLASSES = {c.__name__: c for c in (
    vtkMRMLNode, vtkMRMLScriptedModuleNode, vtkMRMLTransformNode, vtkMRMLVolumeNode, vtkMRMLScalarVolumeNode,
    vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode, vtkMRMLPlotSeriesNode,
    vtkMRMLPlotChartNode, vtkMRMLPlotViewNode, vtkMRMLSubjectHierarchyNode)}


class _Collection:
    def __init__(self, items):
        self._items, self._i = list(items), 0

    def UnRegister(self, other):
        pass

    def InitTraversal(self):
        self._i = 0

    def GetNextItemAsObject(self):
        if self._i >= len(self._items):
            return None
        self._i += 1
        return self._items[self._i - 1]

    def GetNumberOfItems(self):
        return len(self._items)


class vtkMRMLScene(vtkObservable):
    NodeAddedEvent, NodeRemovedEvent = 66000, 66001
    StartCloseEvent, EndCloseEvent = 66002, 66003
    StartImportEvent, EndImportEvent = 66004, 66005

    def __init__(self):
        super().__init__()
        self._nodes, self._ids = {}, itertools.count(1)

    def CreateNodeByClass(self, className):
        return NODE_CLASSES[className]()

    def AddNode(self, node):
        node._id = f"{node.GetClassName()}{next(self._ids)}"
        node._scene = self
        self._nodes[node._id] = node
        self.InvokeEvent(self.NodeAddedEvent, node)
        return node

    def AddNewNodeByClass(self, className, name=""):
        node = self.CreateNodeByClass(className)
        node._name = name or self.GenerateUniqueName(className.replace("vtkMRML", "").replace("Node", ""))
        return self.AddNode(node)

    def RemoveNode(self, node):
        if node is not None and self._nodes.pop(node.GetID(), None) is not None:
            self.InvokeEvent(self.NodeRemovedEvent, node)
            node._scene = None

    def GetNodeByID(self, nodeId):
        return self._nodes.get(nodeId)

    def IsNodePresent(self, node):
        return node is not None and self._nodes.get(node.GetID()) is node

    def nodesOfClass(self, className):
        return [n for n in self._nodes.values() if n.IsA(className)]

    def GetNodesByClass(self, className):
        return _Collection(self.nodesOfClass(className))

    def GetFirstNodeByClass(self, className):
        nodes = self.nodesOfClass(className)
        return nodes[0] if nodes else None

    def GetNumberOfNodesByClass(self, className):
        return len(self.nodesOfClass(className))

    def GetNthNodeByClass(self, index, className):
        nodes = self.nodesOfClass(className)
        return nodes[index] if 0 <= index < len(nodes) else None

    def GetSingletonNode(self, tag, className):
        return next((n for n in self.nodesOfClass(className) if n.GetSingletonTag() == tag), None)

    def GenerateUniqueName(self, base):
        names = {n.GetName() for n in self._nodes.values()}
        if base not in names:
            return base
        return next(f"{base}_{i}" for i in itertools.count(1) if f"{base}_{i}" not in names)

    def Clear(self, removeSingletons=False):
        """Close Scene: every node is removed except singletons, whose content is reset (as MRML does)."""
        self.InvokeEvent(self.StartCloseEvent)
        for node in list(self._nodes.values()):
            if node.GetSingletonTag() and not removeSingletons:
                if isinstance(node, vtkMRMLScriptedModuleNode):
                    node._parameters, node._refs, node._attributes = {}, {}, {}
                continue
            self.RemoveNode(node)
        self.InvokeEvent(self.EndCloseEvent)
