import sys

from medbench.launch import main

sys.exit(main())
