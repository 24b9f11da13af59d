"""``python -m fairlens ...`` is the ``fairlens`` command (also what ``accelerate launch -m fairlens``
and ``torchrun -m fairlens`` start in every process of a data-parallel run)."""

import sys

from fairlens.apps.cli import main

sys.exit(main())
