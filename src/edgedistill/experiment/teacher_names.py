"""How a run names its teachers: in progress lines, in errors (the recipe key to fix), and as folders of the run
directory."""
from __future__ import annotations

from typing import Any

from edgedistill.config import Recipe, TeacherConfig


def teacher_label(spec: Any) -> str:
    """How progress lines and the report name a teacher."""
    return "teacher" if spec.name == "teacher" else f"teacher '{spec.name}'"


def teacher_key(recipe: Recipe, name: str) -> str:
    """The recipe key that names a teacher in errors."""
    if recipe.teacher is not None:
        return "teacher"
    names = [t.name or f"teacher{i + 1}" for i, t in enumerate(recipe.teachers)]
    return f"teachers[{names.index(name)}]" if name in names else f"teacher '{name}' (made by method '{recipe.method.name}')"


def teacher_dirs(plans: dict[int, list[TeacherConfig]]) -> dict[tuple[int, str], str]:
    """A teacher specified the same way for every seed is one folder; one that depends on the seed gets one per seed."""
    dirs = {}
    for seed, specs in plans.items():
        for spec in specs:
            same = all(any(o.name == spec.name and o == spec for o in other) for other in plans.values())
            dirs[(seed, spec.name)] = spec.name if same else f"{spec.name}/seed{seed}"
    return dirs
