"""Built-in distillation methods; importing a module registers its method."""

from medbench.methods import (  # noqa: F401
    coresets,
    datm,
    dc,
    dm,
    full,
    idm,
    mtt,
    package,
    random_selection,
)
