"""Data sets: MedMNIST files, imported folders and manifests, splits, transform presets."""
