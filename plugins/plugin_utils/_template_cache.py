# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compiled templates kept between runs, through Jinja's own bytecode cache.

ansible-core compiles every template string again in every run (and in every forked worker): for the stack's
object templates and the role variables they use that was about 0.2 s of a 2.2 s no-op ``site.yml``. Jinja's
``FileSystemBytecodeCache`` stores the compiled code per user (in a private directory it creates with mode 0700 and
checks the owner of). The name each entry is stored under says what was compiled and what decides the code
besides the source (ansible-core and Jinja versions, backslash escaping as ansible-core compiles it at that
moment); Jinja checks the source's checksum and the Python version, so a changed template or an upgrade compiles
anew.

While the matrix.stack.manifests lookup renders one template, the template and the nested templates it needs
(variables that are templates) go through the cache. Templates with a ``#jinja2:`` override line (and the overlay
environments they get), ansible-core's template debugging, and an ansible-core without what this relies on fall
back to the normal compile. ``MATRIX_STACK_TEMPLATE_CACHE`` names another directory, or switches the cache off
when set to ``off``.
"""

import contextlib
import hashlib
import os

import jinja2

from ansible.release import __version__ as ANSIBLE_VERSION

try:  # ansible-core's compile-time state (2.19+); without it nothing is cached
    from ansible._internal._templating._jinja_bits import _TemplateCompileContext
except ImportError:  # pragma: no cover - other ansible-core
    _TemplateCompileContext = None

ENV_VAR = "MATRIX_STACK_TEMPLATE_CACHE"
_caches = {}


def bytecode_cache():
    """The cache for ``MATRIX_STACK_TEMPLATE_CACHE`` (default: Jinja's private per-user directory); None when off
    or when it cannot be created."""
    setting = os.environ.get(ENV_VAR, "")
    if setting == "off":
        return None
    if setting not in _caches:
        try:
            if setting:
                os.makedirs(setting, mode=0o700, exist_ok=True)
            _caches[setting] = jinja2.FileSystemBytecodeCache(setting or None, "matrix-stack-%s.cache")
        except (OSError, RuntimeError):
            _caches[setting] = None
    return _caches[setting]


def cache_name(what, escape_backslashes):
    """The name compiled code is cached under: what was compiled (a template's path, or the digest of a nested
    template's source) and what decides the code besides the source."""
    return "%s|ansible-core %s|jinja2 %s|escape_backslashes=%s" % (what, ANSIBLE_VERSION, jinja2.__version__,
                                                                   escape_backslashes)


def _escape_backslashes():
    """Whether ansible-core compiles with backslash escaping right now (it changes the compiled code)."""
    context = _TemplateCompileContext.current(optional=True)
    return bool(context and context.escape_backslashes)


@contextlib.contextmanager
def compiled_once(templar, source, path):
    """While active, compiling a template string on ``templar``'s environment goes through the bytecode cache:
    ``source`` itself (named by ``path``) and the nested templates rendering it needs."""
    cache = bytecode_cache()
    try:
        env = templar._engine.environment  # pylint: disable=protected-access  # guarded: falls back when it changes
    except AttributeError:
        env = None
    if (cache is None or env is None or _TemplateCompileContext is None or not callable(getattr(env, "compile", None))
            or {"compile", "overlay"} & set(vars(env)) or source.lstrip().startswith("#jinja2:")
            or getattr(env, "_debuggable_template_source", False)):
        yield False
        return
    original_compile, original_overlay = env.compile, env.overlay

    def compile_cached(src, name=None, filename=None, raw=False, defer_init=False):
        if raw or defer_init or not isinstance(src, str) or src.lstrip().startswith("#jinja2:"):
            return original_compile(src, name, filename, raw, defer_init)
        what = path if src == source else "<nested %s>" % hashlib.sha256(src.encode("utf-8")).hexdigest()
        bucket = cache.get_bucket(env, cache_name(what, _escape_backslashes()), None, src)
        if bucket.code is None:
            bucket.code = original_compile(src, name, filename, raw, defer_init)
            with contextlib.suppress(OSError):
                cache.set_bucket(bucket)
        return bucket.code

    def overlay(*args, **kwargs):
        # An overlay (a template's own #jinja2: settings) copies the instance's attributes: it compiles as usual.
        derived = original_overlay(*args, **kwargs)
        vars(derived).pop("compile", None)
        vars(derived).pop("overlay", None)
        return derived

    env.compile, env.overlay = compile_cached, overlay
    try:
        yield True
    finally:
        del env.compile
        del env.overlay
