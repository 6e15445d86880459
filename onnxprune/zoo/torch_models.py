"""The zoo's architectures, built in code with torch: MLP, LeNet, VGG, ResNets, MobileNetV2 (with
squeeze-excitation), DenseNets, U-Net, and the MNIST-like autoencoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class MLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGGSmall(nn.Module):
    def __init__(
        self, cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, "M"), num_classes: int = 10
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = 3, 32
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [*_conv_bn(cin, int(v), 3), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * size * size, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, cout, 3)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, cout, 1)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        width: int,
        num_classes: int,
        imagenet_stem: bool,
    ):
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(*_conv_bn(3, width, 3), nn.ReLU())
        cin, stages = width, []
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class ResNetBasic(_ResNet):
    def __init__(self, num_classes: int = 10):
        super().__init__(BasicBlock, (2, 2), 16, num_classes, imagenet_stem=False)


class ResNetBottleneck(_ResNet):
    def __init__(self, num_classes: int = 10):
        super().__init__(Bottleneck, (2, 2), 16, num_classes, imagenet_stem=False)


class ResNet50(_ResNet):
    def __init__(self, num_classes: int = 1000):
        super().__init__(Bottleneck, (3, 4, 6, 3), 64, num_classes, imagenet_stem=True)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.relu(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(s)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, se: bool = False):
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        if se:
            layers.append(SqueezeExcitation(hidden, max(8, hidden // 4)))
        layers += _conv_bn(hidden, cout, 1)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class _MobileNetV2(nn.Module):
    def __init__(
        self,
        settings: Sequence[tuple[int, int, int, int, bool]],
        stem: int,
        stem_stride: int,
        last: int,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, stem, 3, stem_stride), nn.ReLU6()]
        cin = stem
        for t, c, n, s, se in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, se))
                cin = c
        layers += [*_conv_bn(cin, last, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class MobileNetV2(_MobileNetV2):
    SETTINGS = (
        (1, 16, 1, 1, False),
        (6, 24, 2, 2, False),
        (6, 32, 3, 2, False),
        (6, 64, 4, 2, False),
        (6, 96, 3, 1, False),
        (6, 160, 3, 2, False),
        (6, 320, 1, 1, False),
    )

    def __init__(self, num_classes: int = 1000):
        super().__init__(self.SETTINGS, 32, 2, 1280, num_classes, dropout=0.2)


class MobileNetV2Small(_MobileNetV2):
    SETTINGS = (
        (1, 16, 1, 1, False),
        (4, 24, 2, 2, True),
        (4, 32, 2, 2, False),
        (4, 48, 1, 1, True),
    )

    def __init__(self, num_classes: int = 10):
        super().__init__(self.SETTINGS, 16, 1, 128, num_classes, dropout=0.2)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleList):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int):
        super().__init__(_DenseLayer(cin + i * growth, growth, bn_size) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2)
        )


class _DenseNet(nn.Module):
    def __init__(
        self,
        growth: int,
        blocks: Sequence[int],
        init_features: int,
        bn_size: int,
        num_classes: int,
        imagenet_stem: bool,
    ):
        super().__init__()
        if imagenet_stem:
            layers: list[nn.Module] = [
                nn.Conv2d(3, init_features, 7, 2, 3, bias=False),
                nn.BatchNorm2d(init_features),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            ]
        else:
            layers = [nn.Conv2d(3, init_features, 3, padding=1, bias=False)]
        c = init_features
        for i, n in enumerate(blocks):
            layers.append(_DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                layers.append(_Transition(c, c // 2))
                c //= 2
        layers.append(nn.BatchNorm2d(c))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class DenseNet121(_DenseNet):
    def __init__(self, num_classes: int = 1000):
        super().__init__(32, (6, 12, 24, 16), 64, 4, num_classes, imagenet_stem=True)


class DenseNetSmall(_DenseNet):
    def __init__(self, num_classes: int = 10):
        super().__init__(8, (3, 3), 16, 4, num_classes, imagenet_stem=False)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(cin, cout, 3), nn.ReLU(), *_conv_bn(cout, cout, 3), nn.ReLU())


class UNetSmall(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 16):
        super().__init__()
        self.enc1 = _double_conv(in_channels, base)
        self.enc2 = _double_conv(base, base * 2)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(base * 2, base * 4)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _double_conv(base * 4 + base * 2, base * 2)
        self.dec1 = _double_conv(base * 2 + base, base)
        self.head = nn.Conv2d(base, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottleneck(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(b), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return self.head(d1)


class AutoEncoder(nn.Module):
    """The seed paper's digits autoencoder: two strided convolutions, a linear bottleneck
    of ``latent`` units, and their mirror; ``widths``: the two convolutions' channels."""

    def __init__(self, latent: int = 32, widths: tuple[int, int] = (16, 32)):
        super().__init__()
        c1, c2 = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, c2 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
