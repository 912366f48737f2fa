"""Kept for the commands in the docs: the same as ``lightning-marl-evaluate`` (:mod:`lightning_marl.evaluate`)."""
from lightning_marl.evaluate import main

if __name__ == "__main__":
    main()
