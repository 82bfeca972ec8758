"""Training regimes. Each module registers its method in ``METHODS`` on import; every module of this
package is imported when the method registry is first used, so a new method is one new file here."""
import importlib
import pkgutil

from edgedistill.methods.base import Method, Step, TeacherNet, freeze

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Method", "Step", "TeacherNet", "freeze"]
