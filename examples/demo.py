"""The README demo: a file store in a temporary directory, driven through the API and CLI.

Uploads a pack, creates a ref, shows a compare-and-swap conflict being refused, then
lists the refs with the command line.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

from mkit_transport import Hash, PackKey, RefConflict, RefWriteCondition, open_transport


def main() -> None:
    """Run the demo in a temporary directory that is removed afterwards."""
    with tempfile.TemporaryDirectory() as root:
        url = f"mkit+file://{root}"
        print(f"store: {url}\n")
        with open_transport(url) as remote:
            pack = b"MKIT demo pack: " + bytes(range(256)) * 64
            key = PackKey.of(pack)
            remote.upload_pack(pack, key)
            print(f"1. uploaded a {len(pack)}-byte pack  {key.hex()[:16]}...")
            assert remote.download_pack(key) == pack
            print("   downloaded it back, verified against its BLAKE3 key")

            v1 = Hash.of(b"snapshot 1")
            remote.update_ref("refs/heads/main", RefWriteCondition.MISSING, v1)
            print(f"2. created refs/heads/main -> {v1.hex()[:16]}... (condition MISSING)")

            v2 = Hash.of(b"snapshot 2")
            remote.update_ref("refs/heads/main", RefWriteCondition.match(v1), v2)
            print(f"   advanced it to {v2.hex()[:16]}... (condition match(v1))")

            try:
                stale = Hash.of(b"someone else's idea")
                remote.update_ref("refs/heads/main", RefWriteCondition.match(v1), stale)
            except RefConflict as conflict:
                assert conflict.current is not None
                print(
                    "3. a stale compare-and-swap was refused: RefConflict, the ref holds "
                    f"{conflict.current.hex()[:16]}..."
                )
            remote.write_ref("refs/tags/v1.0", v1)
            print("   tagged refs/tags/v1.0 (condition ANY)\n")

        print(f"4. $ python -m mkit_transport refs list {url}")
        subprocess.run([sys.executable, "-m", "mkit_transport", "refs", "list", url], check=True)
        print(f"\n   $ python -m mkit_transport refs write {url} refs/heads/main <hash> --missing")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mkit_transport",
                "refs",
                "write",
                url,
                "refs/heads/main",
                v1.hex(),
                "--missing",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"   {proc.stderr.strip()}  (exit status {proc.returncode})")


if __name__ == "__main__":
    main()
