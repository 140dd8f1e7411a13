"""A toy gendiff domain (tests only): a small MLP denoiser on the core's 2-D Gaussian mixture."""
