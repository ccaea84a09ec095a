"""Users, authentication and EventStoreDB 24.10's default access rules, for a secure test node.

Only a TLS node authenticates: an insecure EventStoreDB node (``--insecure``) has neither
authentication nor ACLs (``AuthorizationPolicyRegistryFactory``: an empty registry when
``Insecure``). What a secure 24.10 node does, and this module reproduces (paths relative to
``src/EventStore.Core/`` at tag ``v24.10.4``):

* **Authentication** (``Services/Transport/Http/AuthenticationMiddleware.cs``, before any gRPC
  handler): exactly one ``authorization: Basic base64(user:password)`` header naming a known
  user with that password authenticates the call as that user; an unknown user or a wrong
  password ends the call with ``UNAUTHENTICATED`` "Unauthenticated" (no trailers), on every
  service. No header, or one that is not a ``Basic user:password`` credential, makes the call
  anonymous (``BasicHttpAuthenticationProvider`` declines, ``AnonymousHttpAuthenticationProvider``
  accepts).
* **Anonymous calls** (``Configuration/ClusterVNodeOptions.cs``: ``AllowAnonymousStreamAccess``
  and ``AllowAnonymousEndpointAccess`` both default to false;
  ``Authorization/AuthorizationPolicies/LegacyPolicySelectorFactory.cs``): every stream
  operation requires an authenticated user, so an anonymous read, write or delete is denied;
  ``PersistentSubscriptions.List`` requires one too; ``Gossip.Read`` is allowed
  (``OverrideAnonymousEndpointAccessForGossip`` defaults to true).
* **Denied** (``Services/Transport/Grpc/RpcExceptions.cs: AccessDenied``): ``PERMISSION_DENIED``
  "Access Denied" with the trailer ``exception: access-denied`` for Read (streams, ``$all``,
  subscriptions), Append, Delete and Tombstone; BatchAppend answers in-band
  (``Streams.BatchAppend.cs``, ``Status.cs``): ``error = {code: PERMISSION_DENIED, message:
  "AccessDenied", details: AccessDenied}``, which esdbclient raises as ``AccessDeniedError``.
* **Rules** (``Authorization/LegacyStreamPermissionAssertion.cs``): writing or deleting ``$all``
  is denied to everyone; an operation on a metastream ``$$X`` is the metadata read (``$mr``) or
  metadata write (``$mw``) of ``X`` (deleting a metastream is denied); a user named ``admin`` or
  in ``$admins`` may do anything else; otherwise the roles of the stream's effective ACL for
  that action decide: ``$all`` lets every caller in, and a role matches a user's name or one of
  its groups.
* **Effective ACL** (``Services/Storage/ReaderIndex/IndexReader.cs: GetEffectiveAcl``,
  ``Data/SystemSettings.cs``): the stream's own ``$acl`` (in the last event of ``$$X``), else the
  system setting (``$userStreamAcl`` or, for ``$``-streams including ``$all``, ``$systemStreamAcl``
  in the last event of ``$settings``), else the default: ``$all`` for every action on user
  streams, ``$admins`` for every action on system streams; each action missing from an ACL
  falls back along the same chain. So by default any authenticated user may read and write user
  streams, only ``$admins`` may read ``$all`` or system streams (``$ops`` may not).

Not emulated: user management (the ``$users`` streams and the Users service: users are fixed
when the server is built), disabled users, user certificates (``UserCertFile``), OAuth/LDAP,
policy plugins, and the ``system`` account.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, NoReturn

import grpc

from eventsourcing_cqrs.testing.esdb_server._interceptors import ServerInterceptor, abort, refusing_handler
from eventsourcing_cqrs.testing.esdb_server._log import DELETED_STREAM_NUMBER, Log, is_metastream

__all__ = [
    "ADMINS",
    "ALL_STREAM",
    "DEFAULT_USERS",
    "OPS",
    "Access",
    "EsdbUser",
    "Principal",
    "Security",
]

ALL_STREAM: Final = "$all"
ADMINS: Final = "$admins"
OPS: Final = "$ops"
#: The role that lets every caller in (SystemRoles.All).
_EVERYONE: Final = "$all"
_ADMIN_NAME: Final = "admin"
_SETTINGS_STREAM: Final = "$settings"
_ACCESS_DENIED: Final = "Access Denied"
_ACCESS_DENIED_TRAILERS: Final = (("exception", "access-denied"),)
_AUTHENTICATED_METHODS: Final = frozenset(
    {"/event_store.client.persistent_subscriptions.PersistentSubscriptions/List"}
)


class Access(Enum):
    """What a call does to a stream (``$$X`` turns read and write into ``X``'s metadata access)."""

    READ = "$r"
    WRITE = "$w"
    DELETE = "$d"
    METADATA_READ = "$mr"
    METADATA_WRITE = "$mw"


_METADATA_ACCESS: Final = {Access.READ: Access.METADATA_READ, Access.WRITE: Access.METADATA_WRITE}


@dataclass(frozen=True, slots=True)
class EsdbUser:
    """A user of a secure test server: a login name, its password and the groups it is in.

    The password never shows in the ``repr``. Example: ``EsdbUser("reader", "s3cret")`` is in no
    group (it may use user streams but not ``$all``); ``EsdbUser("ops", "changeit", ("$ops",))``.
    """

    name: str
    password: str = field(repr=False)
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or ":" in self.name:
            raise ValueError(f"a user name is a non-empty string without ':', not {self.name!r}")
        if not isinstance(self.password, str) or not self.password:
            raise ValueError(f"user {self.name!r} needs a non-empty password")
        groups = (self.groups,) if isinstance(self.groups, str) else tuple(self.groups)
        if not all(isinstance(group, str) and group for group in groups):
            raise ValueError(f"the groups of user {self.name!r} must be non-empty strings")
        object.__setattr__(self, "groups", groups)


#: EventStoreDB's default users (``SystemUsers.cs``, ``UserManagementService.cs``).
DEFAULT_USERS: Final = (EsdbUser("admin", "changeit", (ADMINS,)), EsdbUser("ops", "changeit", (OPS,)))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a call: a user (name and groups) or, with ``name=None``, the anonymous caller."""

    name: str | None
    groups: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        return self.name is not None

    @property
    def is_admin(self) -> bool:
        """``WellKnownAssertions.Admin``: named ``admin`` or in ``$admins``."""
        return self.name == _ADMIN_NAME or ADMINS in self.groups

    def holds(self, role: str) -> bool:
        """Whether an ACL entry ``role`` names this caller (a role is a user name or a group)."""
        return role == _EVERYONE or (self.authenticated and (role == self.name or role in self.groups))


ANONYMOUS: Final = Principal(None)


# ------------------------------------------------------------------------------------ ACLs


_Roles = tuple[str, ...] | None


def _roles(value: object) -> _Roles:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return tuple(value)
    return None


@dataclass(frozen=True, slots=True)
class _Acl:
    """A ``$acl`` object: roles per action, ``None`` for an action it does not mention."""

    roles: Mapping[Access, _Roles]

    @classmethod
    def everyone_may_do(cls, role: str) -> _Acl:
        return cls(dict.fromkeys(Access, (role,)))

    @classmethod
    def parse(cls, value: object) -> _Acl | None:
        if not isinstance(value, dict):
            return None
        return cls({access: _roles(value.get(access.value)) for access in Access})


_DEFAULT_USER_STREAM_ACL: Final = _Acl.everyone_may_do(_EVERYONE)
_DEFAULT_SYSTEM_STREAM_ACL: Final = _Acl.everyone_may_do(ADMINS)


def _last_json_object(log: Log, stream: str) -> dict[str, Any]:
    number = log.last_number(stream)
    if number < 0 or number == DELETED_STREAM_NUMBER:
        return {}
    record = log.stream_record(stream, number)
    if record is None or not record.is_json:
        return {}
    try:
        parsed = json.loads(record.data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# ------------------------------------------------------------------------------ the policy


class Security:
    """The users of a secure node and the access rules it applies (see the module docstring).

    ``allow_anonymous_stream_access`` is EventStoreDB's option of that name (default false).
    """

    def __init__(
        self,
        log: Log,
        users: Iterable[EsdbUser] = DEFAULT_USERS,
        *,
        allow_anonymous_stream_access: bool = False,
    ) -> None:
        self._log = log
        self._users: dict[str, EsdbUser] = {}
        for user in users:
            if not isinstance(user, EsdbUser):
                raise TypeError(f"users are EsdbUser values, not {type(user).__name__}")
            if user.name in self._users:
                raise ValueError(f"user {user.name!r} is given twice")
            self._users[user.name] = user
        self.allow_anonymous_stream_access = allow_anonymous_stream_access

    @property
    def users(self) -> tuple[EsdbUser, ...]:
        return tuple(self._users.values())

    def user(self, name: str) -> EsdbUser | None:
        return self._users.get(name)

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal | None:
        """The caller a call's metadata names; ``None`` when its credentials are refused."""
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        if len(values) != 1:
            return ANONYMOUS
        value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
        scheme, _, parameter = value.strip().partition(" ")
        if scheme != "Basic":
            return ANONYMOUS
        try:
            decoded = base64.b64decode(parameter.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None  # [inf] .NET's FromBase64String throws: the call fails, it is not anonymous
        name, colon, password = decoded.partition(":")
        if not colon:
            return ANONYMOUS
        user = self._users.get(name)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return Principal(user.name, frozenset(user.groups))

    def interceptor(self) -> ServerInterceptor:
        """The server interceptor that authenticates every call, as the HTTP middleware does."""
        return _AuthenticationInterceptor(self)

    # -- authorization --------------------------------------------------------------------

    def may(self, principal: Principal, stream: str, access: Access) -> bool:
        """Whether ``principal`` may do ``access`` on ``stream`` (``$all`` for the log)."""
        if not principal.authenticated and not self.allow_anonymous_stream_access:
            return False
        if stream == ALL_STREAM and access in (Access.WRITE, Access.DELETE):
            return False
        if is_metastream(stream):
            metadata_access = _METADATA_ACCESS.get(access)
            if metadata_access is None:
                return False
            stream, access = stream[2:], metadata_access
        if principal.is_admin:
            return True
        return any(principal.holds(role) for role in self._effective_roles(stream, access))

    def _effective_roles(self, stream: str, access: Access) -> tuple[str, ...]:
        system = stream.startswith("$")
        default = _DEFAULT_SYSTEM_STREAM_ACL if system else _DEFAULT_USER_STREAM_ACL
        settings = _last_json_object(self._log, _SETTINGS_STREAM)
        system_acl = _Acl.parse(settings.get("$systemStreamAcl" if system else "$userStreamAcl")) or default
        stream_acl = _Acl.parse(_last_json_object(self._log, "$$" + stream).get("$acl")) or system_acl
        for acl in (stream_acl, system_acl, default):
            roles = acl.roles.get(access)
            if roles is not None:
                return roles
        return ()

    def allows(self, context: grpc.ServicerContext, stream: str, access: Access) -> bool:
        """Whether the caller of ``context`` may do ``access`` on ``stream``."""
        principal = self.authenticate(context.invocation_metadata())
        return principal is not None and self.may(principal, stream, access)

    @staticmethod
    def deny(context: grpc.ServicerContext) -> NoReturn:
        """End the call as EventStoreDB's ``RpcExceptions.AccessDenied()`` does."""
        abort(context, grpc.StatusCode.PERMISSION_DENIED, _ACCESS_DENIED, _ACCESS_DENIED_TRAILERS)


# ------------------------------------------------------------------------- the interceptor


class _AuthenticationInterceptor(ServerInterceptor):
    """Refuses bad credentials on every call (``UNAUTHENTICATED``), and anonymous calls to the
    methods that require an authenticated user (``PERMISSION_DENIED``)."""

    def __init__(self, security: Security) -> None:
        self._security = security

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        principal = self._security.authenticate(handler_call_details.invocation_metadata)
        if principal is None:
            return refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated")
        if not principal.authenticated and handler_call_details.method in _AUTHENTICATED_METHODS:
            denied = grpc.StatusCode.PERMISSION_DENIED
            return refusing_handler(handler, denied, _ACCESS_DENIED, _ACCESS_DENIED_TRAILERS)
        return handler
