"""Images domain: Ho et al. 2020 U-Net, MNIST / digits / image folders / torchvision datasets, FD, KID, accuracy, bits/dim.

    from gendiff.domains import images
    images.train(data="mnist", out="runs/mnist", max_steps=2000)
    pixels = images.sample(run="runs/mnist", n=64, sampler="ddim", steps=50, guidance=3.0, labels="balanced",
                           out="grid.png")
    metrics = images.evaluate(run="runs/mnist", n=1000, sampler="dpm_solver_pp", steps=20)
"""
from .api import load_run, sample, train
from .data import ImageData, ImageDataset, load_data, to_model, to_pixels
from .demo import demo
from .evaluate import evaluate
from .unet import UNet, UNetConfig

__all__ = ["train", "sample", "evaluate", "demo", "load_run", "load_data", "ImageData", "ImageDataset", "to_model",
           "to_pixels", "UNet", "UNetConfig"]
