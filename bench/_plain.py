"""The plain hand-written PyTorch loop that microcli is measured against: ImageFolder-style loading with
torchvision transforms in a DataLoader, a torchvision model, nothing clever. Shared by the benches."""

from __future__ import annotations

import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from microcli.models import create_model


class Files(Dataset):
    """What ImageFolder does (default loader: PIL, converted to RGB), over an explicit list of files."""

    def __init__(self, items, size, train):
        self.items = items
        aug = [T.RandomHorizontalFlip(), T.RandomVerticalFlip()] if train else []
        self.tf = T.Compose([T.Resize((size, size)), *aug, T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as im:
            return self.tf(im.convert("RGB")), label


def loader(items, size, train, workers=2, batch_size=64):
    return DataLoader(Files(items, size, train), batch_size=batch_size, shuffle=train, num_workers=workers,
                      persistent_workers=False)


def train(items, arch, num_classes, size, epochs, workers=2) -> float:
    """Images per second over `epochs` epochs, DataLoader start-up included."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes, 3)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    crit = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for x, y in loader(items, size, True, workers):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def predict(paths, arch, num_classes, size, workers=2) -> float:
    model = create_model(arch, num_classes, 3).eval()
    t0 = time.perf_counter()
    n = 0
    with torch.no_grad():
        for x, _ in loader([(p, 0) for p in paths], size, False, workers):
            torch.softmax(model(x), 1).argmax(1)
            n += len(x)
    return n / (time.perf_counter() - t0)
