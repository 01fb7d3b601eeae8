"""URL dispatch: a scheme table, lazily imported, open to third parties.

``open_transport("mkit+file:///srv/store")`` looks the scheme up in a table of
``"module:Class"`` strings and imports the module only then, so ``import
mkit_transport`` never pulls in boto3, paramiko or requests. Third-party
transports register through the ``mkit_transport.transports`` entry-point group
(name = scheme, value = ``module:Class`` or ``module:function``) or
:func:`register_transport`. Built-in schemes cannot be overridden.

Options come from the URL's query (``?retries=0``) or as keyword arguments; keyword
arguments win. Every scheme refuses options it does not know.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
import threading
from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .errors import InvalidArgument
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .transport import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME_RE",
    "is_loopback_host",
    "is_valid_remote_path",
    "open_transport",
    "pop_bool",
    "pop_int",
    "pop_retry",
    "pop_seconds",
    "redact_url",
    "register_transport",
    "registered_schemes",
    "reject_options",
    "scheme_target",
    "split_url",
]

ENTRY_POINT_GROUP: Final = "mkit_transport.transports"

#: The built-in schemes and where their transport lives; imported on first use.
BUILTIN_SCHEMES: Final[dict[str, str]] = {
    "mkit+memory": "mkit_transport.transports.memory:MemoryTransport",
    "mkit+file": "mkit_transport.transports.file:FileTransport",
    "mkit+http": "mkit_transport.transports.http:HttpTransport",
    "mkit+https": "mkit_transport.transports.http:HttpTransport",
    "mkit+s3": "mkit_transport.transports.s3:S3Transport",
    "mkit+s3+http": "mkit_transport.transports.s3:S3Transport",
    "mkit+ssh": "mkit_transport.transports.ssh:SshTransport",
}

#: One project name: a path segment of an ``mkit+http(s)`` URL, and the first path
#: segment the HTTP pack server routes on (spec/SPEC-HTTP.md). Here, not in either
#: HTTP module, so the server shares it without importing the client's requests.
PROJECT_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: One segment of a store path (SSH) or an S3 prefix: nothing a shell would interpret.
_PATH_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+")

#: The scheme at the start of a URL, as :func:`redact_url` finds it.
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: An ssh account name: kept by :func:`redact_url` (it names an account, not a secret).
_SSH_USER_RE: Final = re.compile(r"[A-Za-z0-9._+-]+")

_BARE_SCHEMES: Final = frozenset({"file", "http", "https", "s3", "ssh", "memory"})

Factory = Callable[..., "Transport"]
_registered: dict[str, str | Factory] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def redact_url(url: str) -> str:
    """``url`` as a message, log line or report may quote it: no password, token or secret.

    Every refusal quotes the URL it refuses, and URLs carry secrets (``user:password@``,
    a token sent as ``TOKEN@host``, a ``?token=`` that a user mistyped), so messages
    quote this instead. User information becomes ``***@`` (everything up to the last
    ``@`` before the query, so a password holding a ``/`` is covered too), except an
    ``mkit+ssh`` account name with no password (``git@``), which names an account; every
    query value, or bare query field, becomes ``***`` (a secret may hide behind any key,
    misspelled or unknown); a fragment becomes ``#***``. Works on any text, URL or not,
    since refusals quote exactly such text.
    """
    text, hashmark, _ = url.partition("#")
    text, question, query = text.partition("?")
    scheme_match = _SCHEME_RE.match(text)
    scheme = scheme_match.group(0) if scheme_match else ""
    rest = text[len(scheme) :]
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        ssh_account = scheme.lower() == "mkit+ssh://" and _SSH_USER_RE.fullmatch(user)
        rest = f"{user if ssh_account else '***'}@{rest}"
    fields = [
        f"{key}=***" if sep else "***"
        for key, sep, _ in (field.partition("=") for field in re.split("[&;]", query))
    ]
    shown = scheme + rest + (question + "&".join(fields) if question else "")
    return shown + ("#***" if hashmark else "")


def register_transport(scheme: str, target: str | Factory) -> None:
    """Make ``scheme`` open with ``target``: a ``"module:Class"`` string or a factory.

    A factory is called as ``factory(url, **options)``; a class is opened through
    its ``from_url`` classmethod. Built-in schemes cannot be replaced.
    """
    if scheme in BUILTIN_SCHEMES:
        raise InvalidArgument(f"{scheme!r} is a built-in scheme and cannot be replaced")
    if not scheme.startswith("mkit+") or scheme != scheme.lower():
        raise InvalidArgument(
            f"a transport scheme is lowercase and starts with 'mkit+': {scheme!r}"
        )
    with _lock:
        _registered[scheme] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        # Imported here: importlib.metadata (and the email package it loads) cost
        # every process ~25 ms at start, and most never open a plug-in scheme.
        import importlib.metadata

        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in BUILTIN_SCHEMES:
                _registered.setdefault(entry.name, entry.value)


def registered_schemes() -> list[str]:
    """Every scheme :func:`open_transport` knows, built-in first."""
    _load_entry_points()
    return list(BUILTIN_SCHEMES) + sorted(_registered)  # no built-in is ever registered


def scheme_target(scheme: str) -> str | None:
    """The ``"module:attr"`` that opens ``scheme``, if it can be imported by name.

    For a process started with ``spawn`` (the conformance suite's race workers): the
    child re-registers the scheme from this string, since a registration made with
    :func:`register_transport` lives in the parent's memory only. A class or function
    registered by object qualifies when it is defined at the top level of a module;
    a lambda or a nested function does not (``None``).
    """
    target: str | Factory | None = BUILTIN_SCHEMES.get(scheme)
    if target is None:
        _load_entry_points()
        target = _registered.get(scheme)
    if target is None or isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        found: object = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is target else None


def _from_url(found: object) -> Factory:
    """A class is opened through its ``from_url``; any other callable is the factory."""
    from_url = getattr(found, "from_url", None) if isinstance(found, type) else None
    if callable(from_url):
        return from_url  # type: ignore[no-any-return]
    if not callable(found):
        raise InvalidArgument(f"a transport target must be a class or a callable, not {found!r}")
    return found


def _resolve(scheme: str, target: str | Factory) -> Factory:
    if not isinstance(target, str):
        return _from_url(target)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            module_name == error.name or module_name.startswith(error.name + ".")
        ):
            raise InvalidArgument(
                f"{scheme}:// is not available: its transport ({module_name}) is not built "
                "in this version of mkit_transport"
            ) from error
        raise InvalidArgument(
            f"{scheme}:// needs the package {error.name!r}, which is not installed"
        ) from error
    found: object = module
    for part in attr.split("."):
        found = getattr(found, part)
    return _from_url(found)


def open_transport(url: str, **options: object) -> Transport:
    """Open the transport a URL names, e.g. ``mkit+file:///srv/store``.

    Raises :class:`InvalidArgument` for a malformed URL, a bare scheme (``file://``,
    ``s3://``...: the ``mkit+`` prefix is required), an unknown scheme or an
    unknown option, and :class:`InsecureScheme` for plaintext to a remote host.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = repr(redact_url(url)) if isinstance(url, str) else type(url).__name__
        raise InvalidArgument(f"not a transport URL: {shown} (expected e.g. mkit+file:///path)")
    scheme = url.split("://", 1)[0]
    if scheme != scheme.lower():
        raise InvalidArgument(f"{redact_url(url)!r}: the scheme must be lowercase")
    if scheme in _BARE_SCHEMES:
        raise InvalidArgument(
            f"{redact_url(url)!r}: bare {scheme}:// is refused; use mkit+{scheme}://"
        )
    target: str | Factory | None = BUILTIN_SCHEMES.get(scheme)
    if target is None:
        _load_entry_points()
        target = _registered.get(scheme)
    if target is None:
        known = ", ".join(registered_schemes())
        raise InvalidArgument(f"{redact_url(url)!r}: unknown scheme {scheme!r} (known: {known})")
    return _resolve(scheme, target)(url, **options)


# -- helpers for a transport's from_url ---------------------------------------------


def is_loopback_host(host: str) -> bool:
    """Say whether ``host`` is loopback (127.0.0.0/8, ::1 or ``localhost``).

    Plaintext schemes (``mkit+http``, ``mkit+s3+http``) are allowed only there.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_url(
    url: str,
    options: MutableMapping[str, object],
    *,
    secrets: Collection[str] = (),
    trusted: Mapping[str, str] | None = None,
) -> SplitResult:
    """Split ``url`` and merge its query into ``options`` (keyword arguments win).

    A query key in ``secrets`` is refused (a URL ends up in logs and shell history),
    however it is spelled: keys are compared percent-decoded (as options are taken)
    and without case (a miscased key would be refused later by a message quoting it).
    That check comes first, since the other refusals quote the URL; such options can
    still be given as keyword arguments.

    A query key in ``trusted`` (option name -> the safe way to give it) is refused
    the same way: it runs a command or weakens verification, and a URL comes from
    untrusted places (a config file in a cloned repository: git's
    ``ssh://-oProxyCommand`` class of bugs). Only a keyword argument, an environment
    variable or a config file the user owns may set it.
    """
    for key, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True):
        if key.lower() in secrets:
            raise InvalidArgument(
                f"{key.lower()} may not appear in a URL; pass it as an option or through the"
                " environment"
            )
        if trusted and key.lower() in trusted:
            name = key.lower()
            raise InvalidArgument(
                f"option {name!r} may not come from a URL's query string (it runs a command"
                f" or weakens verification, and URLs come from untrusted places); "
                f"{trusted[name]}"
            )
    if any(c in url for c in "\x00\r\n\t "):
        raise InvalidArgument(
            f"{redact_url(url)!r}: URLs may not contain whitespace or control characters"
        )
    malformed = False
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        # Raised outside this block, with no cause nor context: parse_qsl's message
        # quotes the bad field, which may be a secret.
        malformed = True
    if malformed:
        raise InvalidArgument(f"{redact_url(url)!r}: a malformed URL or query")
    if parts.fragment:
        raise InvalidArgument(f"{redact_url(url)!r}: a transport URL has no fragment")
    for key, value in query:
        options.setdefault(key, value)
    return parts


def pop_bool(options: MutableMapping[str, object], name: str, default: bool) -> bool:
    """Take a boolean option given as a bool or as true/false/1/0 text."""
    value = options.pop(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    raise InvalidArgument(f"option {name!r} must be true or false, got {value!r}")


_Default = TypeVar("_Default")
_N = TypeVar("_N", int, float)


def _pop_parsed(
    options: MutableMapping[str, object], name: str, parse: Callable[[str], _N], what: str
) -> _N | None:
    """Take an option given as a value or as text (from a URL query), parsed; None if absent."""
    value = options.pop(name, None)
    if value is None:
        return None
    try:
        return parse(str(value))
    except ValueError:
        raise InvalidArgument(f"option {name!r} must be {what}, got {value!r}") from None


def pop_seconds(
    options: MutableMapping[str, object], name: str, default: _Default
) -> float | _Default:
    """Take a duration in seconds given as a number or as text (``default`` if absent)."""
    seconds = _pop_parsed(options, name, float, "seconds")
    return default if seconds is None else seconds


def pop_int(options: MutableMapping[str, object], name: str) -> int | None:
    """Take a whole-number option, if given."""
    return _pop_parsed(options, name, int, "a whole number")


def pop_retry(options: MutableMapping[str, object]) -> RetryPolicy | None:
    """Take ``retry`` (a RetryPolicy) or ``retries`` (a count) from the options."""
    retry = options.pop("retry", None)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidArgument(f"option 'retry' must be a RetryPolicy, got {type(retry).__name__}")
    count = pop_int(options, "retries")
    if count is not None:
        if count < 0:
            raise InvalidArgument(f"option 'retries' must be a count >= 0, got {count}")
        retry = (retry or RetryPolicy()).replace(retries=count)
    return retry


def reject_options(url: str, options: MutableMapping[str, object]) -> None:
    """Refuse whatever options a transport did not take."""
    if options:
        names = ", ".join(sorted(options))
        raise InvalidArgument(f"{redact_url(url)!r}: unknown option(s) {names}")


def is_valid_remote_path(path: str) -> bool:
    """Say whether ``path`` is a store path a URL or forced command may name.

    Absolute or relative, non-empty, not ``/``; every segment ``[A-Za-z0-9._-]+`` and
    neither ``.`` nor ``..``. Nothing a shell or ``ssh`` would interpret can pass.
    A relative one is also a valid S3 prefix (the same rule).
    """
    if not isinstance(path, str) or path in ("", "/"):
        return False
    segments = path[1:].split("/") if path.startswith("/") else path.split("/")
    return all(_PATH_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments)
