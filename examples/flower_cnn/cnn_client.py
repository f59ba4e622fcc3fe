"""A Flower client for your own images: a small PyTorch CNN on an .npz file.

Written the way Flower's tutorials write a client (``get_weights``/``set_weights``, ``train``,
``test`` and a ``NumPyClient``); it knows nothing of Mycelium. The file holds ``x``, the images
(``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``, any size, any numeric type), ``y``, their
integer labels, and optionally ``classes``, the number of classes (so that every file agrees on
the model even when one lacks a label).

    mycelium join --bootstrap URL \\
        --task examples/flower_cnn/cnn_client.py:client_fn --task-option data=my_images.npz
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from flwr.client import NumPyClient
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    """Two 3x3 convolutions, pooled to 4x4 whatever the image size, then two dense layers."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def images(x: np.ndarray) -> np.ndarray:
    """Images as float32 ``(N, C, H, W)`` in about [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)  # channels last
    if x.ndim != 4:
        raise ValueError(f"x must hold images (N, H, W) or (N, C, H, W), got shape {x.shape}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(x, dtype=np.float32) / scale


def load_data(
    path: str, classes: int | None = None, batch_size: int = 32, seed: int = 0
) -> tuple[DataLoader, DataLoader, int, int]:
    """Train and validation loaders (80/20) of one .npz file, its channels and classes."""
    with np.load(path, allow_pickle=False) as archive:
        x, y = images(archive["x"]), archive["y"].astype(np.int64)
        if classes is None:
            classes = int(archive["classes"]) if "classes" in archive.files else int(y.max()) + 1
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, round(0.2 * len(y)))
    val, train = order[:cut], order[cut:]

    def loader(idx: np.ndarray, shuffle: bool) -> DataLoader:
        data = TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle)

    return loader(train, True), loader(val, False), x.shape[1], classes


def train(net: Net, trainloader: DataLoader, epochs: int, device: torch.device) -> float:
    """Train the network on the training set; the mean training loss."""
    net.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    running_loss, batches = 0.0, 0
    for _ in range(epochs):
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(inputs.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            batches += 1
    return running_loss / max(batches, 1)


def test(net: Net, testloader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Validate the network on a data set; its mean loss and accuracy."""
    net.to(device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    correct, loss = 0, 0.0
    net.eval()
    with torch.no_grad():
        for inputs, labels in testloader:
            outputs = net(inputs.to(device))
            loss += criterion(outputs, labels.to(device)).item()
            correct += (outputs.argmax(1) == labels.to(device)).sum().item()
    total = len(testloader.dataset)
    return loss / total, correct / total


def get_weights(net: Net) -> list[np.ndarray]:
    return [val.cpu().numpy() for _, val in net.state_dict().items()]


def set_weights(net: Net, parameters: list[np.ndarray]) -> None:
    params_dict = zip(net.state_dict().keys(), parameters, strict=True)
    state_dict = OrderedDict({k: torch.tensor(v) for k, v in params_dict})
    net.load_state_dict(state_dict, strict=True)


class FlowerClient(NumPyClient):
    def __init__(
        self, net: Net, trainloader: DataLoader, valloader: DataLoader, local_epochs: int
    ) -> None:
        self.net = net
        self.trainloader = trainloader
        self.valloader = valloader
        self.local_epochs = local_epochs
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def get_parameters(self, config):  # type: ignore[no-untyped-def]
        return get_weights(self.net)

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        set_weights(self.net, parameters)
        train_loss = train(self.net, self.trainloader, self.local_epochs, self.device)
        return get_weights(self.net), len(self.trainloader.dataset), {"train_loss": train_loss}

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        set_weights(self.net, parameters)
        loss, accuracy = test(self.net, self.valloader, self.device)
        return loss, len(self.valloader.dataset), {"accuracy": accuracy}


def client_fn(
    data: str, classes: str = "", epochs: str = "1", batch_size: str = "32", seed: str = "0"
) -> FlowerClient:
    """The client of the images in ``data`` (options arrive as strings)."""
    trainloader, valloader, channels, n_classes = load_data(
        data, int(classes) if classes else None, int(batch_size), int(seed)
    )
    torch.manual_seed(int(seed))
    net = Net(channels, n_classes)
    return FlowerClient(net, trainloader, valloader, int(epochs))
