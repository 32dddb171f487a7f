"""The quantization methods compared side by side, registered here by name (and nowhere else).

A method from outside the project registers itself the same way (``METHODS.register_module``),
in a module a config imports with mmengine's ``custom_imports``.
"""
from ..registry import METHODS
from .base import Method, MethodOutput, RunContext
from .dfq import DFQ, DFQThenZAQ
from .gdfq import GDFQ
from .ptq import FullPrecision, NoisePTQ, RealPTQ
from .real_kd import RealKD
from .zaq import ZAQ, ZAQNoActivation, ZAQNoFeature, ZAQOfficial
from .zeroq import ZeroQ

for _name, _method in {
    "fp": FullPrecision, "ptq": NoisePTQ, "real-ptq": RealPTQ, "zeroq": ZeroQ, "zaq": ZAQ,
    "zaq-official": ZAQOfficial, "zaq-no-feat": ZAQNoFeature, "zaq-no-act": ZAQNoActivation,
    "dfq": DFQ, "dfq+zaq": DFQThenZAQ, "gdfq": GDFQ, "real-kd": RealKD,
}.items():
    if _name not in METHODS.module_dict:  # a second import of this package registers nothing twice
        METHODS.register_module(name=_name, module=_method)

__all__ = ["Method", "MethodOutput", "RunContext", "FullPrecision", "NoisePTQ", "RealPTQ", "ZeroQ", "ZAQ",
           "ZAQOfficial", "ZAQNoFeature", "ZAQNoActivation", "DFQ", "DFQThenZAQ", "GDFQ", "RealKD"]
