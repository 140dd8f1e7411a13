"""Images domain: Ho et al. 2020 U-Net, MNIST / digits / image folders / torchvision datasets, FD, KID, accuracy, bits/dim.

    from gendiff.domains import images
    images.train(data="mnist", out="runs/mnist", max_steps=2000)
    pixels = images.sample(run="runs/mnist", n=64, sampler="ddim", steps=50, guidance=3.0, labels="balanced",
                           out="grid.png")
    metrics = images.evaluate(run="runs/mnist", n=1000, sampler="dpm_solver_pp", steps=20)
    pixels = images.sample(run="pretrained:mnist", n=64, labels="0-9", guidance=3.0)   # the shipped model

Runs are folders in the core's run format (gendiff.runs: config.json, weights.safetensors, card.json);
convert_run turns a folder of the format before it (config.json 'gendiff-images-v1' + checkpoint.pt) into one.

Every verb takes device='auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' (gendiff.device.resolve_device); sample_x0 is
sampling's tensor part (x_T -> x0 on the model's device), which runs on any device, the meta device included.
"""
from . import api  # images.api.NAME, as before the split
from .convert import convert_run
from .data import ImageData, ImageDataset, load_data, to_model, to_pixels
from .demo import demo
from .evaluate import evaluate
from .run import load_run
from .sampling import prior_noise, sample, sample_x0
from .training import ImageTrainConfig, train
from .unet import UNet, UNetConfig

__all__ = ["api", "train", "ImageTrainConfig", "sample", "sample_x0", "prior_noise", "evaluate", "demo", "load_run",
           "convert_run", "load_data", "ImageData", "ImageDataset", "to_model", "to_pixels", "UNet", "UNetConfig"]
