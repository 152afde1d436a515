# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for matrix.stack.matrix_secret: hides results that carry secret values (``return_values``)."""

from ansible_collections.matrix.stack.plugins.plugin_utils._sensitive_result import SensitiveResultAction


class ActionModule(SensitiveResultAction):

    def carries_secret(self, result):
        return "values" in result or bool(self._task.args.get("return_values"))
