"""Built-in architectures. One line per network a model package may name."""

from semiseg.nets import register_network
from semiseg.nets.vnet import VNet

register_network("vnet")(VNet)
register_network("dual-vnet-resnet")(__import__("semiseg.nets.dual", fromlist=["DualVNetResNet"]).DualVNetResNet)
register_network("vnet-dynamic")(__import__("semiseg.nets.dynamic_vnet", fromlist=["DynamicVNet"]).DynamicVNet)
import semiseg.nets.diffvnet  # noqa: E402,F401  registers "diffvnet" and "diffvnet-infer" (A&D)
