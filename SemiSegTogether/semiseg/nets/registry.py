"""Built-in architectures: every network a model package may name."""

import semiseg.nets.diffvnet  # noqa: F401  registers "diffvnet" and "diffvnet-infer" (A&D) by decorator
from semiseg.nets import register_network
from semiseg.nets.dual import DualVNetResNet
from semiseg.nets.dynamic_vnet import DynamicVNet
from semiseg.nets.vnet import VNet

register_network("vnet")(VNet)
register_network("dual-vnet-resnet")(DualVNetResNet)
register_network("vnet-dynamic")(DynamicVNet)
