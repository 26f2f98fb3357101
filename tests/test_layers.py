"""The layout is a checked contract: import-linter checks every ``import`` (pyproject's layers
contract, run by .ci/run and tox); what it cannot see, the registries' lazy ``"module:object"``
built-ins, is checked here: each resolves, is registered by the module it names, and that module
sits in the layer of what it registers."""

from __future__ import annotations

import importlib

import pytest

from medbench.data.registry import BUILTIN_DATASETS, DATASETS
from medbench.distill.contract import BUILTIN_METHODS, METHODS
from medbench.nn.models.registry import BUILTIN_MODELS, MODELS

LAYERS = {"method": "medbench.methods.", "dataset": "medbench.data.", "model": "medbench.nn.models."}


@pytest.mark.parametrize(("registry", "builtins"), [(METHODS, BUILTIN_METHODS), (DATASETS, BUILTIN_DATASETS),
                                                    (MODELS, BUILTIN_MODELS)], ids=["methods", "datasets", "models"])
def test_every_builtin_resolves_from_its_own_layer(registry, builtins):
    for name, target in builtins.items():
        module = target.partition(":")[0]
        assert module.startswith(LAYERS[registry.kind]), f"{registry.kind} {name}: {module} is outside its layer"
        registry.get(name)  # imports the module, whose decorator registers the name
        origin = registry.origin(name)
        assert origin.startswith(module), f"{name}: registered by {origin}, declared in {module}"
        importlib.import_module(module)


def test_a_taken_name_names_both_places():
    with pytest.raises(ValueError, match=r"already registered by medbench\.methods\.dm:dm; .* cannot register"):
        METHODS.add("dm", object(), "tests.test_layers:impostor")
