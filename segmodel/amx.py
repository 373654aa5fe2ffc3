"""`python -m segmodel.amx COMMAND...`, the documented name for users' own apps: runs
segmodel.deploy.amx (COMMAND with AMX tile data refused)."""
import sys

from .deploy.amx import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
