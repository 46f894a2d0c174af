"""Quantization: calibration, target-aware QDQ emission, PTQ, sensitivity and mixed precision.

The QDQ representation shared by every stage is documented in `hwopt.quant.qdq`.
"""

from hwopt.quant.qdq import QuantRecord, check_bits, read_quant_params, write_quant_params

__all__ = ["QuantRecord", "check_bits", "read_quant_params", "write_quant_params"]
