import pytest

from edgedistill.errors import UserInputError
from edgedistill.registry import LOSSES, METHODS, Registry


def test_register_lookup_and_docs():
    reg = Registry("thing")

    @reg.register("alpha", flavour="x")
    def alpha():
        """First line of the doc.

        More text."""

    assert reg.get("alpha") is alpha
    assert reg.entry("alpha").doc == "First line of the doc."
    assert reg.entry("alpha").meta == {"flavour": "x"}
    assert reg.names() == ["alpha"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: None)


def test_unknown_name_suggests_close_matches_and_names_the_key():
    with pytest.raises(UserInputError, match=r"method.terms\[0\].loss: unknown loss 'kdd'.*Did you mean 'kd'"):
        LOSSES.get("kdd", key="method.terms[0].loss")


def test_foundation_entries_are_registered():
    assert {"ce", "kd", "reverse_kd", "mse", "mse_to_teacher"} <= set(LOSSES.names())
    assert {"offline", "supervised"} <= set(METHODS.names())
