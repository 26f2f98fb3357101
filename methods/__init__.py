"""Built-in distillation methods; importing a module registers its method."""

from medbench.methods import full, random_selection  # noqa: F401
