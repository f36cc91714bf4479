"""``python -m tiffin``: the ``tiffin`` command, for where no console script is installed
(a container image runs the server this way)."""

from tiffin.cli import main

main()
