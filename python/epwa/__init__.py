"""epwa: MoE language models on the CPU, EPW-A watermarking and its detection.

A thin layer over the C++ library (the same code as the ``epwa`` command, so the same numbers to
the bit); docs/PYTHON.md describes it. The GIL is released while a model computes: several
threads may share one Model and one Detector.
"""

from ._epwa import (
    DetectionResult,
    Detector,
    Error,
    Generation,
    LayerTrace,
    Model,
    ModelConfig,
    TokenDetail,
    Tokenizer,
    Trace,
    WatermarkConfig,
)

__all__ = [
    "DetectionResult",
    "Detector",
    "Error",
    "Generation",
    "LayerTrace",
    "Model",
    "ModelConfig",
    "TokenDetail",
    "Tokenizer",
    "Trace",
    "WatermarkConfig",
]
