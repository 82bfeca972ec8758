"""Training regimes. Each module registers its method in ``METHODS`` on import."""
from edgedistill.methods import offline, supervised  # noqa: F401  (registration)
from edgedistill.methods.base import Method, Step, TeacherNet, freeze

__all__ = ["Method", "Step", "TeacherNet", "freeze"]
