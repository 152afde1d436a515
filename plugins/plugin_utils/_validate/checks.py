# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Format and range checkers of the input validation.

Every checker takes a value and returns ``None`` when the value is fine, or ``(problem, allowed)``: what is
wrong with the value and what would be accepted. Checkers never raise and never print the value (the caller
decides whether it may be shown).
"""

import ipaddress
import re
from urllib.parse import urlsplit

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Host names as resolvers take them (any case; labels of at most 63 characters).
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# Kubernetes resource quantity (k8s.io/apimachinery/pkg/api/resource).
QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_QUANTITY_FACTORS = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
}
# Synapse's parse_size and parse_duration (synapse/config/_base.py).
SYNAPSE_SIZE = re.compile(r"^([0-9]+)([KMGT]?)$")
SYNAPSE_SIZE_FACTORS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
SYNAPSE_DURATION = re.compile(r"^[0-9]+[smhdwy]?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\.[a-z0-9]+([._-][a-z0-9]+)*)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SECRET_KEY = re.compile(r"^[-._A-Za-z0-9]{1,253}$")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value):
    return isinstance(value, str)


def integer(value, minimum=None, maximum=None):
    """An integer within [minimum, maximum] (either bound optional)."""
    low = "" if minimum is None else f"from {minimum}"
    high = "" if maximum is None else f"to {maximum}" if minimum is not None else f"up to {maximum}"
    allowed = " ".join(part for part in ("an integer", low, high) if part)
    if not is_int(value):
        return "is not an integer", allowed
    if minimum is not None and value < minimum:
        return "is too small", allowed
    if maximum is not None and value > maximum:
        return "is too large", allowed
    return None


def port(value):
    problem = integer(value, 1, 65535)
    return (problem[0].replace("an integer", "a port number"), "a port number from 1 to 65535") if problem else None


def uid(value):
    """A non-root user or group ID (Pod Security restricted refuses UID 0)."""
    problem = integer(value, 1, 2147483647)
    return (problem[0], "a non-root ID from 1 to 2147483647 (Pod Security restricted refuses root)") if problem else None


def dns_label(value, max_length=63):
    allowed = f"a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most {max_length} characters"
    if not _text(value) or len(value) > max_length or not DNS_LABEL.match(value):
        return "is not a DNS-1123 label", allowed
    return None


def dns_subdomain(value):
    if not _text(value) or not DNS_SUBDOMAIN.match(value):
        return ("is not a Kubernetes object name",
                "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters")
    return None


def optional(checker):
    """The checker, or the empty string (meaning "not set")."""
    def check(value, *args, **kwargs):
        if value == "":
            return None
        problem = checker(value, *args, **kwargs)
        return (problem[0], problem[1] + ", or empty") if problem else None
    check.__name__ = checker.__name__
    return check


def ip_address(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "is not an IP address", "an IPv4 or IPv6 address such as 203.0.113.10"
    return None


def cidr(value):
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        return "is not an IP address or CIDR range", "an address or range such as 10.0.0.0/8 or fd00::/8"
    return None


def hostname(value):
    """A DNS name or an IP address (what a client can connect to)."""
    if _text(value) and (HOSTNAME.match(value) or ip_address(value) is None):
        return None
    return "is not a host name or IP address", "a DNS name such as db.example.com or an IP address"


def server_name(value):
    """A Matrix server name: a lowercase DNS name with an optional port."""
    allowed = "a lowercase DNS name with an optional :port, such as example.com (no scheme, no path)"
    if not _text(value):
        return "is not a string", allowed
    host, port_text = (value.split(":", 1) + [""])[:2]
    if not DNS_SUBDOMAIN.match(host) or len(value) > 255 or (port_text and (not port_text.isdigit() or port(int(port_text)))):
        return "is not a DNS name", allowed
    return None


def url(value, schemes=("https", "http"), path=True):
    """An absolute URL with one of ``schemes`` and a host; with ``path=False`` only "/" is accepted as path."""
    allowed = " or ".join(f"{scheme}://" for scheme in schemes) + " URL with a host"
    allowed += ", ending with '/' and without a path" if not path else ""
    if not _text(value):
        return "is not a URL", allowed
    try:
        parts = urlsplit(value)
        parts.port  # pylint: disable=pointless-statement  # raises ValueError on a bad port
    except ValueError:
        return "is not a URL", allowed
    if parts.scheme not in schemes:
        return f"has scheme {parts.scheme or 'none'!r}", allowed
    if not parts.hostname or hostname(parts.hostname) is not None:
        return "has no valid host", allowed
    if any(char.isspace() for char in value):
        return "contains whitespace", allowed
    if not path and (parts.path != "/" or parts.query or parts.fragment):
        return "must be only scheme, host and optional port, ending with '/'", allowed
    return None


def quantity(value):
    if _text(value) and QUANTITY.match(value):
        return None
    if is_int(value) and value >= 0:
        return None
    return "is not a Kubernetes quantity", "a quantity such as 10Gi, 512Mi or 250m"


def quantity_value(value):
    """The number a Kubernetes quantity stands for (bytes for memory, cores for CPU), or None."""
    if is_int(value):
        return float(value)
    match = QUANTITY.match(value) if _text(value) else None
    if not match:
        return None
    number = value[:len(value) - len(match.group(3) or "")].lstrip("+")
    suffix = match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return float(value.lstrip("+"))
    return float(number) * _QUANTITY_FACTORS[suffix]


def synapse_size(value):
    """A size as Synapse parses it: bytes, or a number with K, M, G or T (binary units)."""
    if is_int(value) and value > 0:
        return None
    if _text(value) and SYNAPSE_SIZE.match(value) and synapse_size_bytes(value) > 0:
        return None
    return "is not a size Synapse understands", "a positive number of bytes or a number followed by K, M, G or T, such as 50M"


def synapse_size_bytes(value):
    if is_int(value):
        return value
    match = SYNAPSE_SIZE.match(value) if _text(value) else None
    return int(match.group(1)) * SYNAPSE_SIZE_FACTORS[match.group(2)] if match else None


def synapse_duration(value):
    if (is_int(value) and value >= 0) or (_text(value) and SYNAPSE_DURATION.match(value)):
        return None
    return ("is not a duration Synapse understands",
            "milliseconds, or a number followed by s, m, h, d, w or y, such as 1h or 90d")


def digest(value):
    if _text(value) and DIGEST.match(value):
        return None
    return "is not an image digest", "sha256: followed by 64 lowercase hex digits"


def image_repository(value):
    if _text(value) and IMAGE_REPOSITORY.match(value):
        return None
    return "is not an image repository", "a repository such as ghcr.io/element-hq/synapse (no tag, no digest)"


def image_tag(value):
    if _text(value) and IMAGE_TAG.match(value):
        return None
    return "is not an image tag", "letters, digits, '_', '.' and '-', at most 128 characters"


def version(value, pattern, example):
    if _text(value) and re.match(pattern, value):
        return None
    return "is not a version", f"a release version such as {example}"


def secret_key(value):
    if _text(value) and SECRET_KEY.match(value):
        return None
    return "is not a Secret key", "letters, digits, '-', '_' and '.'"


def non_empty(value):
    if value in ("", None, [], {}):
        return "is empty", "a non-empty value"
    return None


def one_of(value, choices):
    if value in choices:
        return None
    return "is not one of the choices", "one of " + ", ".join(str(choice) for choice in choices)
