"""Built-in distillation methods. Each module registers its methods when imported; the registry
(:data:`medbench.distill.contract.BUILTIN_METHODS`) imports them by name on first lookup."""
