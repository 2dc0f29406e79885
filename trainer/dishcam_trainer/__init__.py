"""dishcam_trainer: trains dishcam's encoders and heads and exports them as dishcam model packs."""

__version__ = "0.1.0"
