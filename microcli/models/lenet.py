"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), adapted to any input size and channel count.

The layer plan is the paper's: C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84, output. Two changes make it
work on micrographs of any size: an adaptive pooling to 5x5 before C5 (the paper's 32x32 input gives
exactly 5x5 there), and ReLU with max pooling, the variant that trains reliably without the paper's
scaled-tanh tricks.
"""

from __future__ import annotations

from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 with ReLU, max pooling and an adaptive 5x5 pooling before C5, for inputs of 16 px and more.

    About 61k parameters (61,281 for 1 channel and 5 classes).

    Parameters
    ----------
    num_classes : int
        Size of the output layer.
    in_channels : int, default 1
        Input channels: 1 for grayscale, 3 for RGB.

    Attributes
    ----------
    features : nn.Sequential
        C1, S2, C3, S4 and the adaptive average pooling to 16 maps of 5x5.
    classifier : nn.Sequential
        C5 (120), F6 (84) and the output layer, on the flattened maps.
    """

    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # C1, S2
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # C3, S4
            nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),  # C5
            nn.Linear(120, 84), nn.ReLU(inplace=True),  # F6
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        """Class logits (no softmax) of a batch.

        Parameters
        ----------
        x : Tensor, shape (N, in_channels, H, W)
            Normalised images, H and W at least 16.

        Returns
        -------
        Tensor, shape (N, num_classes)
        """
        return self.classifier(self.features(x))
