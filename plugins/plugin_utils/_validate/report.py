# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collected problems of one validation pass, and the values they are about."""

import json

# Values longer than this are cut in messages.
_SHOWN_MAX = 80
_UNSET = object()


def shown(value):
    """A short JSON rendering of a scalar value for a message; containers are only described."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 3] + '..."'


class Report:
    """Collects every problem; ``check`` runs a checker on a variable unless that variable already failed.

    ``values`` maps variable names to their templated, type-converted values; ``failed`` holds the names
    whose type check failed (rules skip them instead of reporting a second, confusing problem).
    """

    def __init__(self, values, failed=()):
        self.values = values
        self.failed = set(failed)
        self.problems = []
        self.sources = []

    def __getitem__(self, name):
        return self.values[name]

    def get(self, name, default=None):
        return self.values.get(name, default)

    def usable(self, *names):
        """True when every named variable is set and passed its type check."""
        return all(name in self.values and name not in self.failed for name in names)

    def error(self, variable, problem, allowed=None):
        message = f"{variable}: {problem}"
        if allowed:
            message += f"; allowed: {allowed}"
        base = variable.split("[")[0].split(".")[0]
        if message not in self.problems:
            self.problems.append(message)
            self.sources.append(base)
        self.failed.add(base)

    def without_consequences(self, derived):
        """The problems, minus those of defaults derived from a variable that has a problem of its own.

        ``derived`` maps a variable left at its role default to the variables that default refers to (a bad
        synapse_server_name makes a bad default synapse_public_baseurl: only the first is worth reporting).
        """
        bad = set(self.sources)
        return [problem for problem, source in zip(self.problems, self.sources) if not derived.get(source, set()) & bad]

    def check(self, variable, checker, *args, value=_UNSET, show=True, label=None):
        """Run ``checker(value, *args)`` on the variable's value (or on ``value`` for a part of it, named ``label``).

        Returns True when the value is fine.
        """
        if value is _UNSET:
            if not self.usable(variable):
                return False
            value = self.values[variable]
        result = checker(value, *args)
        if result is None:
            return True
        problem, allowed = result
        if show:
            problem += f" (got {shown(value)})"
        self.error(label or variable, problem, allowed)
        return False

    def check_items(self, variable, checker, *args, show=True):
        """Run the checker on every element of a list variable; names the bad elements by index."""
        if not self.usable(variable):
            return False
        ok = True
        for index, item in enumerate(self.values[variable]):
            ok = self.check(variable, checker, *args, value=item, show=show, label=f"{variable}[{index}]") and ok
        return ok

    def check_set(self, variable, because, allowed, checker=None, *args):
        """The variable must not be empty (``because`` says why it is needed) and, once set, pass ``checker``."""
        if not self.usable(variable):
            return False
        if not self.values[variable]:
            self.error(variable, f"is empty while {because}", allowed)
            return False
        return checker is None or self.check(variable, checker, *args)

    def require(self, condition, variable, problem, allowed=None):
        """Report ``problem`` about ``variable`` unless ``condition`` holds."""
        if not condition:
            self.error(variable, problem, allowed)
        return bool(condition)
