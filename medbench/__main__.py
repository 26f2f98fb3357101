import sys

from medbench.cli.launch import main

sys.exit(main())
