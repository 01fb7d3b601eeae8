"""The README demo: a file store in a temporary directory, driven through the API and CLI.

Part 1, the transport: uploads a pack, creates a ref, shows a compare-and-swap
conflict being refused, then lists the refs with the command line.
Part 2, snapshot sync: pushes a directory, changes one file, pushes again (a small
second upload), pulls the snapshot elsewhere and compares the trees.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import tempfile

from mkit_transport import (
    Hash,
    PackKey,
    RefConflict,
    RefWriteCondition,
    open_transport,
    pull,
    push,
)


def _same_tree(a: str, b: str) -> bool:
    """Compare two directory trees file by file (contents, not just stat)."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return (
        not mismatch
        and not errors
        and all(_same_tree(os.path.join(a, d), os.path.join(b, d)) for d in cmp.common_dirs)
    )


def sync_demo(work: str) -> None:
    """Push a tree, change one file, push again, pull elsewhere and compare."""
    url = f"mkit+file://{work}/remote"
    src = os.path.join(work, "project")
    for i in range(200):
        os.makedirs(os.path.join(src, f"pkg{i % 10}"), exist_ok=True)
        with open(os.path.join(src, f"pkg{i % 10}", f"mod{i}.py"), "w") as f:
            f.write(f"# module {i}\n" + f"def f(x):\n    return x * {i}\n" * 40)
    os.makedirs(os.path.join(src, "empty"))
    with open(os.path.join(src, "run.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(src, "run.sh"), 0o755)  # noqa: S103 - an executable, on purpose
    os.symlink("pkg0/mod0.py", os.path.join(src, "link.py"))

    print(f"\n5. push {src} -> {url} refs/heads/main")
    with open_transport(url) as remote:
        first = push(src, remote, "refs/heads/main")
        print(f"   first push:  {first.objects_sent} objects, {first.bytes_uploaded} bytes")
        with open(os.path.join(src, "pkg3", "mod3.py"), "a") as f:
            f.write("# one edit\n")
        second = push(src, remote, "refs/heads/main")
        print(
            f"   after editing one file: {second.objects_sent} objects, "
            f"{second.bytes_uploaded} bytes (skipped {second.objects_skipped})"
        )
        again = push(src, remote, "refs/heads/main")
        print(f"   unchanged re-push: {again.bytes_uploaded} bytes, ref updated: {again.updated}")
        dest = os.path.join(work, "elsewhere")
        pulled = pull(remote, "refs/heads/main", dest)
        print(f"6. pulled into {dest}: {pulled.files} files")
    print(f"   trees identical: {_same_tree(src, dest)}")
    print(f"   $ python -m mkit_transport log {url} refs/heads/main")
    subprocess.run(
        [sys.executable, "-m", "mkit_transport", "log", url, "refs/heads/main"], check=True
    )


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
        sync_demo(root)


if __name__ == "__main__":
    main()
