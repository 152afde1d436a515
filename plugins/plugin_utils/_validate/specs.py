# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' argument specs (``roles/<role>/meta/argument_specs.yml``, entry point ``main``) as the source of types.

The specs stay the documented interface; this module reads them and checks each variable's type, choices,
list elements and required-ness one variable at a time, so every problem is attributed to its variable.
"""

import re

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

# Spec keys the validator does not need (documentation only).
_DOC_KEYS = ("description", "version_added")


def _strip(options):
    clean = {}
    for name, option in (options or {}).items():
        option = {key: value for key, value in (option or {}).items() if key not in _DOC_KEYS}
        if "options" in option:
            option["options"] = _strip(option["options"])
        clean[name] = option
    return clean


def role_options(argument_specs):
    """The ``main`` entry point's options of a loaded argument_specs.yml document, without documentation keys."""
    main = ((argument_specs or {}).get("argument_specs") or {}).get("main") or {}
    return _strip(main.get("options"))


def check_types(report, options, raw):
    """Check and convert every option of one role. ``raw`` holds the templated values that are set.

    Converted values go into ``report.values``; variables that fail go into ``report.failed``.
    """
    for name, option in options.items():
        provided = {name: raw[name]} if name in raw else {}
        if not provided and "default" not in option and not option.get("required"):
            continue
        kind = _wrong_kind(raw[name], option) if provided else None
        if kind:
            report.error(name, kind[0], kind[1])
            continue
        result = _validator(name, option).validate(provided)
        if result.error_messages:
            for message in result.error_messages:
                report.error(name, _rephrase(name, message, option))
        else:
            report.values[name] = result.validated_parameters[name]


_KINDS = {"list": (list, "a list"), "dict": (dict, "a mapping")}


def _kind(value):
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a single value"


def _wrong_kind(value, option):
    """Refuse what ansible-core would silently convert but the templates would use as is.

    A string given for a list ("a,b" becomes [a, b] for the spec, but a template iterates its characters), a
    list or mapping given for a string (stringified).
    """
    kind = option.get("type", "str")
    if kind in _KINDS and value is not None and not isinstance(value, _KINDS[kind][0]):
        return f"is {_kind(value)}, not {_KINDS[kind][1]}", _describe(option)
    if kind in ("str", "int", "bool") and isinstance(value, (dict, list, tuple)):
        return f"is {_kind(value)}, not a single value", _describe(option)
    if kind == "list" and option.get("elements") in ("str", "int", "bool") and isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list, tuple)):
                return f"element [{index}] is {_kind(item)}", _describe(option)
    return None


def _describe(option):
    kind = option.get("type", "str")
    if option.get("elements"):
        return f"a list of {option['elements']}"
    return {"dict": "a mapping", "list": "a list", "int": "an integer", "bool": "true or false"}.get(kind, "a string")


_VALIDATORS = {}


def _validator(name, option):
    """One ArgumentSpecValidator per option (building one costs more than using it)."""
    key = (name, repr(option))
    if key not in _VALIDATORS:
        _VALIDATORS[key] = ArgumentSpecValidator({name: option})
    return _VALIDATORS[key]


def _rephrase(name, message, option):
    """ansible-core's messages name the argument; make them lead with the variable and say what is allowed."""
    if message.startswith("missing required arguments") and f" found in {name}" not in message:
        return "is required and not set; see docs/configuration.md"
    message = re.sub(r"^argument '[^']+' ", "", message)
    message = re.sub(r"^value of \S+ must be", "must be", message)
    allowed = _describe(option)
    if option.get("choices"):
        allowed = "one of " + ", ".join(str(choice) for choice in option["choices"])
    return f"{message.rstrip('.')}; allowed: {allowed}"
