"""Kept for the commands in the docs: the same as ``lightning-marl-plot`` (:mod:`lightning_marl.plot`)."""
from lightning_marl.plot import main

if __name__ == "__main__":
    main()
