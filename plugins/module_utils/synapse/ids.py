# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Matrix user IDs and server names, e-mail addresses as Synapse normalises them, the shared-secret registration MAC."""

import hashlib
import hmac
import re

# https://spec.matrix.org/v1.17/appendices/#user-identifiers
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
# server_name = hostname [ ":" port ]; hostname = IPv4 / "[" IPv6 "]" / DNS name
_DNS_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9\-.]{0,253}[A-Za-z0-9])?"
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}\]"
SERVER_NAME_RE = re.compile(r"^(?:%s|%s)(?::[0-9]{1,5})?$" % (_IPV6, _DNS_NAME))
MAX_USER_ID_LENGTH = 255


class UserIdError(ValueError):
    pass


def validate_server_name(server_name):
    if not server_name or not SERVER_NAME_RE.match(server_name):
        raise UserIdError("%r is not a valid Matrix server name" % (server_name,))
    if ":" in server_name.rsplit("]", 1)[-1]:
        port = int(server_name.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise UserIdError("%r is not a valid Matrix server name (port)" % (server_name,))
    return server_name


def parse_user_id(user, server_name=None):
    """Return ``(localpart, server_part)`` for a localpart or a full MXID.

    ``server_part`` is None for a bare localpart. Follows the Matrix user identifier grammar for
    new users: lowercase ``a-z 0-9 . _ = - / +``, at most 255 bytes for the full ID.
    """
    if not isinstance(user, str) or not user:
        raise UserIdError("user must be a non-empty string")
    if user.startswith("@"):
        if ":" not in user:
            raise UserIdError("%r is not a valid Matrix user ID: expected @localpart:server.name" % user)
        localpart, server_part = user[1:].split(":", 1)
        validate_server_name(server_part)
    else:
        if ":" in user:
            raise UserIdError("%r is not a valid localpart: a full user ID must start with '@'" % user)
        localpart, server_part = user, None
    if not localpart:
        raise UserIdError("%r is not a valid Matrix user ID: empty localpart" % user)
    if not LOCALPART_RE.match(localpart):
        hint = " (upper-case letters are not allowed)" if LOCALPART_RE.match(localpart.lower()) else ""
        raise UserIdError(
            "%r is not a valid Matrix user ID localpart: only a-z, 0-9 and '._=-/+' are allowed%s" % (localpart, hint))
    full_len = len(("@%s:%s" % (localpart, server_part or server_name or "")).encode("utf-8"))
    if (server_part or server_name) and full_len > MAX_USER_ID_LENGTH:
        raise UserIdError("%r is too long: a Matrix user ID is at most 255 bytes" % user)
    return localpart, server_part


def make_user_id(user, server_name):
    """Full MXID for ``user`` on ``server_name``; refuses users of another server."""
    localpart, server_part = parse_user_id(user, server_name)
    if server_part is not None and server_part != server_name:
        raise UserIdError(
            "%r belongs to server %r, but the homeserver serves %r: this module manages local users only"
            % (user, server_part, server_name))
    return "@%s:%s" % (localpart, server_name)


def canonicalise_email(address):
    """Synapse's normalisation (synapse.util.threepids.canonicalise_email): strip, casefold the
    local part, lowercase the domain."""
    address = address.strip()
    parts = address.split("@")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError("%r is not a valid e-mail address" % address)
    return parts[0].casefold() + "@" + parts[1].lower()


def registration_mac(shared_secret, nonce, username, password, admin, user_type=None):
    """HMAC-SHA1 of the shared-secret registration (synapse.rest.admin.users.UserRegisterServlet)."""
    mac = hmac.new(key=shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()
