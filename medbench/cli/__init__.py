"""The ``medbench`` command line (:mod:`medbench.cli.main`); light, so the entry point
(:mod:`medbench.cli.launch`) installs its signal handlers before torch and medmnist load."""
