"""`python -m semiseg ...` (also what torchrun launches)."""

from semiseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
