"""medsight: deep learning on medical images, from the scanner to the clinician."""

__version__ = "0.1.0"
