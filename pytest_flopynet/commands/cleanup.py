"""flopynet cleanup: what crashed netns runs left behind (like mn -c)."""
from __future__ import annotations

from ..network import gns3
from ..network.lab import cleanup, leftovers
from . import EXIT_FAILED, EXIT_OK


def cmd_cleanup(args) -> int:
    if args.check:
        found = leftovers() + gns3.leftovers()
        print("\n".join(f"left over: {thing}" for thing in found) if found else "nothing left over")
        return EXIT_FAILED if found else EXIT_OK
    removed = cleanup() + gns3.cleanup()
    print("\n".join(f"removed {thing}" for thing in removed) if removed else "nothing left over")
    return EXIT_OK
