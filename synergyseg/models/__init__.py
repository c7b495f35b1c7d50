"""The model: the dilated ResNet trunk, DeepLabV3+, the fusions and the two-scale SynergySeg model."""
