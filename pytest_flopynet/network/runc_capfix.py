#!/usr/bin/env python3
"""OCI runtime wrapper for dockerd (--add-runtime capfix=THIS --default-runtime capfix): removes the
capabilities that this machine's bounding set lacks from a container's (or an exec's) process spec,
then hands over to runc. Without it, privileged containers fail with "unable to apply caps" (GNS3
starts its Docker nodes with every capability). It ships in the package so that dockerd has a fixed
path to run (`flopynet gns3 check` prints it); standard library only, it runs under the system's
python3."""
import json
import os
import sys

CAPS = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
        "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
        "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
        "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
        "PERFMON BPF CHECKPOINT_RESTORE").split()  # bit i of CapBnd is CAPS[i]


def bounding_set() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("CapBnd")).split()[1], 16)


def missing() -> set[str]:
    """The capabilities Docker knows that this machine's bounding set lacks, as CAP_ names."""
    bnd = bounding_set()
    return {"CAP_" + name for bit, name in enumerate(CAPS) if not bnd >> bit & 1}


def strip(path, key):
    with open(path) as file:
        spec = json.load(file)
    caps = (spec.get(key) or {}).get("capabilities") if key else spec.get("capabilities")
    if caps:
        gone = missing()
        for kind in caps:
            caps[kind] = [c for c in caps[kind] if c not in gone]
        with open(path, "w") as file:
            json.dump(spec, file)


def main(args: list[str]) -> None:
    if "create" in args or "run" in args:
        bundle = args[args.index("--bundle") + 1] if "--bundle" in args else "."
        strip(os.path.join(bundle, "config.json"), "process")
    if "exec" in args and "--process" in args:
        strip(args[args.index("--process") + 1], None)
    os.execvp("runc", ["runc"] + args)


if __name__ == "__main__":
    main(sys.argv[1:])
