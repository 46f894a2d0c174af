"""hwopt: hardware-aware model compression and deployment.

    import hwopt
    hwopt.inspect("model.onnx")            # census: ops, params, MACs, prunable groups
    hwopt.bench("model.onnx", runtime="openvino")
    hwopt.load_device("rpi4")
"""

from hwopt.api import bench, inspect, list_devices, load_device
from hwopt.errors import HwoptError

__version__ = "0.1.0"

__all__ = ["HwoptError", "__version__", "bench", "inspect", "list_devices", "load_device"]
