"""``python -m asyncbatch``: the same command line as the ``asyncbatch`` script."""

from ._cli import main

if __name__ == "__main__":
    main()
