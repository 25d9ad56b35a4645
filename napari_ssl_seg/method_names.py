"""The names of the training methods, in one neutral place (no imports).

The registry builds a method from its name; the model card accepts exactly the names the registry
can build; the command-line help lists them. Both sides import this table, so networks/ (which
reads cards) needs nothing of methods/ (which builds on networks/).
"""

from __future__ import annotations

import re

__all__ = ["METHODS", "is_method_name", "method_choices"]

#: Built-in methods: name -> "module:Class".
METHODS: dict[str, str] = {
    "supervised": "napari_ssl_seg.methods.supervised:SupervisedMethod",
    "mt": "napari_ssl_seg.methods.mt:MeanTeacher",
    "uamt": "napari_ssl_seg.methods.uamt:UncertaintyAwareMeanTeacher",
    "cps": "napari_ssl_seg.methods.cps:CrossPseudoSupervision",
    "ucmt": "napari_ssl_seg.methods.ucmt:UCMT",
    "ugcemt": "napari_ssl_seg.methods.ugcemt:UGCEMT",
    "ugmcl": "napari_ssl_seg.methods.ugmcl:UGMCL",
    "curecl": "napari_ssl_seg.methods.curecl:CURECL",
    "ccedual": "napari_ssl_seg.methods.ccedual:CCEDual",
}

#: A method outside this package: "package.module:Class".
EXTERNAL_METHOD = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


def is_method_name(name: str) -> bool:
    """A built-in method, or the ``package.module:Class`` form the registry also builds."""
    return name in METHODS or EXTERNAL_METHOD.fullmatch(name) is not None


def method_choices() -> str:
    """``"supervised, mt, ... or ccedual"``: for help texts."""
    names = list(METHODS)
    return f"{', '.join(names[:-1])} or {names[-1]} (or package.module:Class)"
