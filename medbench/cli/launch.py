"""The ``medbench`` command's entry point: signal handlers first (:mod:`medbench.core.signals`),
then torch, medmnist and the commands (:mod:`medbench.cli.main`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from medbench.core.signals import check, install, interrupted, received


def main(argv: Sequence[str] | None = None) -> int:
    install()
    try:
        from medbench.cli import main as commands  # torch, medmnist & co. load here

        check()
        code = commands.main(argv)
        return interrupted() if received() and code == 0 else code
    except KeyboardInterrupt as exc:
        return interrupted(exc)


if __name__ == "__main__":
    sys.exit(main())
