"""The V-Net of the LA benchmark lineage (UA-MT variant) and the network registry."""

import pytest
import torch

from semiseg.errors import ModelError
from semiseg.nets import build_network, network_names
from semiseg.nets.vnet import VNet


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_count():
    # UA-MT's VNet(n_channels=1, n_classes=2, n_filters=16, normalization='batchnorm') has 9,448,866.
    assert n_params(VNet(1, 2, 16, "batch")) == 9_448_866


def test_width_and_norm_options_change_the_network():
    # Instance norm here has no affine parameters: 2 per channel per norm layer fewer than batch norm.
    batch, inst = VNet(1, 2, 16, "batch"), VNet(1, 2, 16, "instance")
    n_norms = sum(isinstance(m, torch.nn.BatchNorm3d) for m in batch.modules())
    channels = sum(m.num_features for m in batch.modules() if isinstance(m, torch.nn.BatchNorm3d))
    # 16 norm layers in the encoder, 13 in the decoder.
    assert n_params(batch) - n_params(inst) == 2 * channels and n_norms == 29
    assert n_params(VNet(1, 2, 8, "group")) < n_params(batch)
    with pytest.raises(ValueError, match="unknown norm"):
        VNet(1, 2, 16, "layer")


def test_logits_and_last_decoder_feature():
    net = VNet(1, 3, 4, "batch").eval()
    x = torch.randn(2, 1, 16, 32, 48)
    logits, feature = net.forward_features(x)
    assert logits.shape == (2, 3, 16, 32, 48) and feature.shape == (2, 4, 16, 32, 48)
    assert torch.equal(net(x), logits)


def test_dropout_is_active_only_in_training():
    net = VNet(1, 2, 4, "none", dropout=0.5)
    x = torch.randn(1, 1, 16, 16, 16)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_registry_rebuilds_from_name_and_args():
    net = build_network("vnet", in_channels=1, n_classes=2, n_filters=4, norm="instance")
    assert net.semiseg_arch == {"name": "vnet", "args": {"in_channels": 1, "n_classes": 2, "n_filters": 4,
                                                          "norm": "instance"}}
    assert {"vnet", "vnet-dynamic", "diffvnet-infer", "dual-vnet-resnet"} <= set(network_names())
    with pytest.raises(ModelError, match="unknown architecture"):
        build_network("unet-9000")
    with pytest.raises(ModelError, match="cannot be built"):
        build_network("vnet", n_filterz=4)
