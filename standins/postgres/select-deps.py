"""Print the library packages the given PostgreSQL .debs depend on (one per line).

The server and client .debs are unpacked by hand: this installs what their binaries link
against, without postgresql-common (Perl cluster wrappers), the LLVM JIT or locales.
"""

import subprocess
import sys

SKIP_PREFIXES = ("postgresql", "libllvm", "libperl", "perl", "locales", "ssl-cert", "debconf")


def depends(deb: str) -> list[str]:
    out = subprocess.run(
        ["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True, check=True
    ).stdout
    names = []
    for item in out.split(","):
        first = item.split("|", 1)[0].strip()
        name = first.split(" ", 1)[0].split(":", 1)[0]
        if name and not name.startswith(SKIP_PREFIXES):
            names.append(name)
    return names


print("\n".join(sorted({name for deb in sys.argv[1:] for name in depends(deb)})))
