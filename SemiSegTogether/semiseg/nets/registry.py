"""Built-in architectures. One line per network a model package may name."""

from semiseg.nets import register_network
from semiseg.nets.vnet import VNet

register_network("vnet")(VNet)
