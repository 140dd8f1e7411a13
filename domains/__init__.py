"""Domains of gendiff: images, weather, molecules (installed from the top-level domains/ folder)."""
