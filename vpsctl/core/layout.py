"""Where vpsctl keeps things on the host: one place, so that every module agrees."""

HOST_ROOT = "/opt/vpsctl"
STACKS_ROOT = f"{HOST_ROOT}/stacks"  # one directory per compose project
HOST_FILES = f"{HOST_ROOT}/host"  # managed files that belong to the box, not to a stack
