def stale(
    root: str,
    paths: bytes,
    count: int,
    rows: bytes | memoryview,
    stride: int,
    trusted_before: int,
    threads: int = 1,
) -> list[int]: ...
