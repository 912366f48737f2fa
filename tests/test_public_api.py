"""The public surface (``lightning_marl``'s exports) and the examples in its docstrings, run as doctests."""
from __future__ import annotations

import doctest
import importlib

import pytest

import lightning_marl

# modules whose docstrings carry examples a user copies
DOCUMENTED = ["lightning_marl", "lightning_marl.config", "lightning_marl.envs", "lightning_marl.models.mixers"]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_every_export_resolves():
    for name in lightning_marl.__all__:
        assert getattr(lightning_marl, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lightning_marl.nope  # noqa: B018
