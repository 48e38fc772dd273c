"""Allow ``python -m ratgan`` (and ``torchrun -m ratgan``)."""

from ratgan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
